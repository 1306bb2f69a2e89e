"""Dynamic AT against PGD-AT and curriculum AT on MNIST: accuracy and time per epoch.

Three co-trainings (``pgd_at``, ``dynamic``, ``curriculum``; all K = 10 at most, α = ε/4,
random start, same seed, data order and schedule) advance *interleaved*, one epoch of each in
turn, so that the time ratios share the machine's load. At the end, clean, FGSM and PGD-20
(α = ε/4, random start) accuracy on the test subset. Per policy: mean seconds per epoch, its
ratio to PGD-AT's (wall clock and process CPU time; on a shared machine the CPU time is the
meaningful one), mean gradient steps and forward/backward passes per sample.

    python -m benchmarks.dynamic_mnist --root /work/shared/data [--epochs 4 --train 4000]
    python -m benchmarks.dynamic_mnist --quick          # digits, 2 epochs (about a minute)

Result (2026-11-21, shared 2-core CPU at load ~20, 2 threads; ``--epochs 3 --train 1024
--test 300``, batch 128, lr 0.01 piecewise, c_max = 0.3 preset, T′ = 2.5 epochs):

    | policy     | clean | FGSM  | PGD-20 | wall s/epoch | vs pgd_at | steps/sample per epoch |
    | pgd_at     | 54.67 | 23.00 |  1.00  | 249.1        | 1.000     | 10 / 10 / 10           |
    | dynamic    | 62.67 | 27.67 |  6.00  | 222.7        | 0.894     | 2.32 / 10 / 10         |
    | curriculum | 66.00 | 29.00 |  8.67  | 115.6        | 0.464     | 1 / 5 / 8              |

At 3 epochs of 1,024 samples no model is robust yet (the paper trains 50 epochs on 60,000).
The dynamic policy stopped most samples after 1-3 steps in epoch 0 (FOSC p50 0.28 ≤ c = 0.3),
but the FOSC of the training examples *grew* afterwards (p50 0.44, then 0.71) while the
threshold fell (0.18, 0.06), so epochs 1-2 ran all K steps: on MNIST a fresh network's small
input gradients make the first-epoch median a low c_max.

For reference, the paper's MNIST table (4-layer CNN, 50 epochs): PGD-AT 97.61 clean /
90.62 PGD-20, Dynamic 97.96 / 91.27.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.loop import Stepper, make_run
from learned_at.runners.robustness import evaluate

POLICIES = ("pgd_at", "dynamic", "curriculum")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/work/shared/data")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train", type=int, default=4000, help="training subset size")
    parser.add_argument("--test", type=int, default=1000, help="test subset size")
    parser.add_argument("--quick", action="store_true", help="digits, 2 epochs")
    parser.add_argument("--extra", nargs="*", default=[], help="overrides for every run")
    args = parser.parse_args(argv)
    if args.quick:
        base = ["data=digits", "epochs=2", "data.train_subset=512", "data.test_subset=256"]
    else:
        base = ["data=mnist", f"data.root={args.root}", f"epochs={args.epochs}",
                f"data.train_subset={args.train}", f"data.test_subset={args.test}"]
    base += ["device=cpu", "progress=false", "seed=0", *args.extra]
    trainers = {}
    for name in POLICIES:
        overrides = [*base, f"policy={name}"]
        trainers[name] = Stepper(make_run(overrides))
    epochs = trainers["pgd_at"].run.epochs
    seconds = {name: [] for name in POLICIES}
    cpu = {name: [] for name in POLICIES}
    print(" ".join(base))
    for epoch in range(epochs):
        for name, trainer in trainers.items():
            c0, t0 = time.process_time(), time.perf_counter()
            trainer.train_epoch(epoch)
            seconds[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            summary = trainer.run.distributions.end_epoch(epoch)
            extra = trainer.run.policy.epoch_metrics()
            line = "  ".join(f"{k}={float(v):.4g}" for k, v in extra.items())
            steps = summary["steps"]["mean"]
            fosc = summary.get("fosc")
            fosc_s = (f" fosc p10/p50/p90={fosc['p10']:.3g}/{fosc['p50']:.3g}/{fosc['p90']:.3g}"
                      if fosc else "")
            passes = summary.get("passes", {}).get("mean", steps)
            print(f"epoch {epoch} {name:<10} {seconds[name][-1]:6.1f}s "
                  f"(cpu {cpu[name][-1]:6.1f}s) steps={steps:.2f} "
                  f"passes={passes:.2f}{fosc_s} {line}", flush=True)
    print("\n| policy | clean | FGSM | PGD-20 | wall s/epoch | wall vs pgd_at | cpu s/epoch "
          "| cpu vs pgd_at |")
    print("|---|---|---|---|---|---|---|---|")
    base_time = sum(seconds["pgd_at"]) / epochs
    base_cpu = sum(cpu["pgd_at"]) / epochs
    for name, trainer in trainers.items():
        run = trainer.run
        res = evaluate(run.target.model, *run.test, ["clean", "fgsm", "pgd20"], run.geometry,
                       run.eps, 500, torch.Generator().manual_seed(0))
        mean_s, mean_c = sum(seconds[name]) / epochs, sum(cpu[name]) / epochs
        print(f"| {name} | {100 * res['clean']['acc']:.2f} | {100 * res['fgsm']['acc']:.2f} | "
              f"{100 * res['pgd20']['acc']:.2f} | {mean_s:.1f} | {mean_s / base_time:.3f} | "
              f"{mean_c:.1f} | {mean_c / base_cpu:.3f} |")


if __name__ == "__main__":
    main()
