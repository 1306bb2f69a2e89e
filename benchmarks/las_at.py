"""LAS-AT against PGD-AT at a comparable mean iteration count, on MNIST (mnist_cnn, ε = 0.3).

Usage::

    python -m benchmarks.las_at [--quick] [--root /work/shared/data] [--train N] [--epochs E]

Both methods are built in one process and trained epoch by epoch, *interleaved* (LAS epoch 0,
PGD epoch 0, LAS epoch 1, ...), so that load on a shared machine hits both alike. LAS-AT uses
its MNIST preset (reference interval 20, lr 1e-4, reward PGD-10 x 2) with the K grid {3..13}
(uniform mean 8) against PGD-AT with K = 8, α = ε/4. Reported per method: clean and PGD-20
accuracy on the test subset, mean iterations per sample (LAS: measured), wall and CPU seconds
per epoch; then the LAS/PGD epoch-time ratios, raw and per (mean K + 1) gradient evaluations.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.loop import Stepper, make_run
from learned_at.runners.robustness import evaluate


def _trainer(policy: list[str], args: argparse.Namespace) -> Stepper:
    return Stepper(make_run([
        "data=mnist", f"data.root={args.root}", f"data.train_subset={args.train}",
        f"data.test_subset={args.test}", f"epochs={args.epochs}", "progress=false",
        "device=cpu", "checkpoint_dir=/tmp/las_at_bench", *policy]))


def _epoch(trainer: Stepper, epoch: int) -> tuple[float, float, float]:
    """Train one epoch; returns (wall s, CPU s, mean iterations per sample)."""
    run = trainer.run
    before = run.env.samples_evaluated
    w0, c0 = time.perf_counter(), time.process_time()
    trainer.train_epoch(epoch)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    n = len(run.loader) * run.config.batch_size
    run.distributions.end_epoch(epoch)
    return wall, cpu, (run.env.samples_evaluated - before) / n


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the side-by-side table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny schedule (< 1 min)")
    p.add_argument("--root", default="/work/shared/data")
    p.add_argument("--train", type=int, default=None, help="training samples")
    p.add_argument("--test", type=int, default=None, help="test samples")
    p.add_argument("--epochs", type=int, default=None)
    args = p.parse_args(argv)
    args.train = args.train or (512 if args.quick else 6000)
    args.test = args.test or (200 if args.quick else 1000)
    args.epochs = args.epochs or (1 if args.quick else 3)
    methods = {
        "las_at": _trainer(["policy=las_at", "policy.steps_grid=[3,4,5,6,7,8,9,10,11,12,13]"],
                           args),
        "pgd_at": _trainer(["policy=pgd_at", "policy.steps=8"], args),
    }
    rows = {m: {"wall": 0.0, "cpu": 0.0, "iters": 0.0} for m in methods}
    for epoch in range(args.epochs):
        for name, trainer in methods.items():
            wall, cpu, iters = _epoch(trainer, epoch)
            r = rows[name]
            r["wall"] += wall / args.epochs
            r["cpu"] += cpu / args.epochs
            r["iters"] += iters / args.epochs
            print(f"epoch {epoch} {name}: wall {wall:.1f}s cpu {cpu:.1f}s "
                  f"iters/sample {iters:.2f}", flush=True)
    for name, trainer in methods.items():
        run = trainer.run
        res = evaluate(run.target.model, *run.test, ["clean", "pgd20"], run.geometry, run.eps,
                       500, torch.Generator().manual_seed(0))
        rows[name].update(clean=res["clean"]["acc"], pgd20=res["pgd20"]["acc"])
    print(f"\nMNIST mnist_cnn eps=0.3, train {args.train}, test {args.test}, "
          f"{args.epochs} epoch(s), batch 128, CPU threads {torch.get_num_threads()}")
    print("| method | clean | PGD-20 | iters/sample | wall s/epoch | CPU s/epoch |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['clean']:.4f} | {r['pgd20']:.4f} | {r['iters']:.2f} | "
              f"{r['wall']:.2f} | {r['cpu']:.2f} |")
    las, pgd = rows["las_at"], rows["pgd_at"]
    for clock in ("wall", "cpu"):
        raw = las[clock] / pgd[clock]
        per_iter = raw * (pgd["iters"] + 1) / (las["iters"] + 1)
        print(f"LAS/PGD epoch time ({clock}): {raw:.3f}  per (iters+1): {per_iter:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
