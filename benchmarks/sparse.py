"""Sparse (L0) fast AT on CIFAR-10: 1-step sAT vs 1-step sTRADES vs Fast-LS-ℓ0 vs 20-step sTRADES.

Usage::

    python -m benchmarks.sparse --data-root ../shared/data             # full mode
    python -m benchmarks.sparse --data-root ../shared/data --quick     # a few minutes
    python -m benchmarks.sparse --quick --data digits                  # no files needed

The question (docs/references.md §8, Fast-LS-ℓ0 Table 3): does 1-step sAT collapse to ~0 robust
accuracy (catastrophic overfitting), and does Fast-LS-ℓ0 (1-step sPGD + N-FGSM noise + soft
labels + sTRADES) avoid it, at what cost relative to 20-step sTRADES?

Methods (``threat=l0``; evaluation at k = ``--k``, 20 on CIFAR-10):

* ``sat_1step``: ``policy=spgd_at policy.steps=1 at_loss=ce`` (trains at k);
* ``strades_1step``: ``policy=spgd_at policy.steps=1 at_loss=trades`` (β = 3, CE attack);
* ``fast_ls_l0``: ``policy=fast_ls_l0`` (its default loss: sTRADES + soft labels);
* ``strades_20step``: ``policy=spgd_at policy.steps=20 policy.k=<--train-k-multi> at_loss=trades``
  (trains at k = 120 like the paper).

Per seed the methods train in lockstep, one batch each in turn (so load from other processes
hits all of them alike at the granularity of a batch; only ratios within one run are
reported), and each method's epoch time is the sum of its own batches. After each epoch: clean
accuracy and Sparse-AutoAttack accuracy (sPGD-p → sPGD-u → Sparse-RS, ``--saa-steps`` sPGD
steps per stage and ``--saa-queries`` queries, fewer than the reference's 300-10 000 / 10 000:
a *weaker* sAA, so its accuracies are upper bounds) on the first ``--test-subset`` test images,
and the epoch's training time relative to ``sat_1step``'s same epoch. The model is ``cifar_cnn``
with a constant learning rate (``--lr``, the reference's peak 0.05).

Writes markdown tables to stdout and, with ``--out``, a JSON file.

Results (2 CPU cores shared with other jobs, load average 10-15, torch 1 thread, 2 seeds;
mean ± std over seeds; "best" = best sAA of any epoch, a collapse shows as final ≪ best):

CIFAR-10 full mode (``cifar_cnn``, 512 training images, 3 epochs, batch 64, lr 0.05, k = 20,
sAA 10 sPGD steps/stage + 100 queries on 64 test images; 2167 s)::

    method          clean (final)   sAA (final)     best sAA        time / sat_1step
    sat_1step       0.250 ± 0.066   0.133 ± 0.033   0.172 ± 0.022   1.000
    strades_1step   0.219 ± 0.022   0.125 ± 0.022   0.195 ± 0.011   1.570 ± 0.017
    fast_ls_l0      0.258 ± 0.077   0.109 ± 0.000   0.133 ± 0.011   1.574 ± 0.000
    strades_20step  0.156 ± 0.044   0.094 ± 0.044   0.148 ± 0.033   2.494 ± 0.162

At this size the models barely leave chance (clean 16-26 %): the accuracies say nothing about
catastrophic overfitting or Fast-LS-ℓ0; only the time ratios are informative (1-step sTRADES
and Fast-LS-ℓ0 ≈ 1.6× 1-step sAT; 20-step sTRADES at k = 120 ≈ 2.5×, not 10×, because samples
stop at their first success and at k = 120 most are fooled within a few steps).

Digits (``--data digits --epochs 8 --train-subset 1024 --test-subset 200 --batch-size 128
--saa-steps 20 --saa-queries 300``; k = 2, multi-step training k = 12; 984 s)::

    method          clean (final)   sAA (final)     best sAA        time / sat_1step
    sat_1step       0.895 ± 0.057   0.230 ± 0.000   0.268 ± 0.053   1.000
    strades_1step   0.910 ± 0.049   0.307 ± 0.018   0.310 ± 0.014   1.582 ± 0.033
    fast_ls_l0      0.865 ± 0.028   0.435 ± 0.028   0.435 ± 0.028   1.598 ± 0.060
    strades_20step  0.893 ± 0.032   0.370 ± 0.014   0.370 ± 0.014   3.014 ± 0.290

On digits the ordering of the paper's Table 3 appears (1-step sAT < 1-step sTRADES <
Fast-LS-ℓ0, and Fast-LS-ℓ0 at least as robust as 20-step sTRADES at about half its cost), but
1-step sAT does not collapse to ~0: it oscillates between 10 % and 30 % sAA and ends at 23 %.
Two seeds, 200 test images (± 3 % binomial standard error) and a weakened sAA: indicative,
not a reproduction of the paper's claims.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from benchmarks.loop import Stepper, make_run
from learned_at.runners.robustness import evaluate

BASELINE = "sat_1step"


def methods(train_k_multi: int) -> dict[str, list[str]]:
    """Method name -> config overrides."""
    return {
        "sat_1step": ["policy=spgd_at", "policy.steps=1", "at_loss=ce"],
        "strades_1step": ["policy=spgd_at", "policy.steps=1", "at_loss=trades"],
        "fast_ls_l0": ["policy=fast_ls_l0"],
        "strades_20step": ["policy=spgd_at", "policy.steps=20", f"policy.k={train_k_multi}",
                           "at_loss=trades"],
    }


def evaluate_sparse(t: Stepper, n: int, k: int, steps: int, queries: int, seed: int
                    ) -> dict[str, float]:
    """Clean and sAA accuracy (with its sPGD-only stage) on the first n test images."""
    name = f"sparse_autoattack{steps}x{queries}"
    run = t.run
    x, y = run.test.x[:n], run.test.y[:n]
    res = evaluate(run.target.model, x, y, ["clean", name], run.geometry, k, 500,
                   torch.Generator(device=run.device).manual_seed(seed))
    return {"clean": res["clean"]["acc"], "spgd": res[f"{name}.spgd_u"]["acc"],
            "saa": res[name]["acc"]}


def train_lockstep(trainers: dict[str, Stepper], epoch: int) -> dict[str, float]:
    """One epoch of every trainer, one batch each in turn; returns seconds per trainer."""
    seconds = dict.fromkeys(trainers, 0.0)
    loaders = {m: iter(t.run.loader) for m, t in trainers.items()}
    for t in trainers.values():
        t.run.policy.begin_epoch(epoch)
    for _ in range(min(len(t.run.loader) for t in trainers.values())):
        for m, t in trainers.items():
            t0 = time.perf_counter()
            t.train_step(next(loaders[m]), epoch)
            seconds[m] += time.perf_counter() - t0
    return seconds


def run_seed(base: list[str], method_overrides: dict[str, list[str]], seed: int, epochs: int,
             eval_args: tuple[int, int, int, int]) -> list[dict[str, float]]:
    """Per-epoch metrics of every method for one seed (methods in lockstep per batch)."""
    trainers = {m: Stepper(make_run([*base, f"seed={seed}", *o]))
                for m, o in method_overrides.items()}
    rows = []
    for epoch in range(epochs):
        row: dict[str, float] = {"seed": seed, "epoch": epoch + 1}
        seconds = train_lockstep(trainers, epoch)
        for m, t in trainers.items():
            row[f"{m}/epoch_s"] = seconds[m]
            for key, value in evaluate_sparse(t, *eval_args, seed).items():
                row[f"{m}/{key}"] = value
        for m in method_overrides:
            row[f"{m}/time_ratio"] = row[f"{m}/epoch_s"] / row[f"{BASELINE}/epoch_s"]
        rows.append(row)
        print(f"seed={seed} epoch={epoch + 1} " + "  ".join(
            f"{m}: clean={row[f'{m}/clean']:.3f} sAA={row[f'{m}/saa']:.3f} "
            f"t×={row[f'{m}/time_ratio']:.2f}" for m in method_overrides), flush=True)
    return rows


def epoch_table(rows: list[dict[str, float]], names: list[str]) -> str:
    """Markdown: per seed and epoch, clean / sPGD / sAA / time× of each method."""
    head = "| seed | epoch | " + " | ".join(f"{m} clean / sPGD / sAA / time×" for m in names)
    lines = [head + " |", "|" + "---|" * (2 + len(names))]
    for r in rows:
        cells = [f"{r[f'{m}/clean']:.3f} / {r[f'{m}/spgd']:.3f} / {r[f'{m}/saa']:.3f} / "
                 f"{r[f'{m}/time_ratio']:.2f}" for m in names]
        lines.append(f"| {int(r['seed'])} | {int(r['epoch'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def summary_table(rows: list[dict[str, float]], names: list[str], epochs: int) -> str:
    """Markdown, mean ± std over seeds: final-epoch clean and sAA, the best sAA of any epoch
    (a collapse shows as final ≪ best) and the mean epoch-time ratio to sat_1step."""
    lines = ["| method | clean (final) | sAA (final) | best sAA (any epoch) | time / sat_1step |",
             "|---|---|---|---|---|"]
    seeds = sorted({int(r["seed"]) for r in rows})
    for m in names:
        final = [r for r in rows if r["epoch"] == epochs]
        best = [max(r[f"{m}/saa"] for r in rows if r["seed"] == s) for s in seeds]
        ratio = [statistics.mean(r[f"{m}/time_ratio"] for r in rows if r["seed"] == s)
                 for s in seeds]
        lines.append(f"| {m} | {_mean_std([r[f'{m}/clean'] for r in final])} | "
                     f"{_mean_std([r[f'{m}/saa'] for r in final])} | {_mean_std(best)} | "
                     f"{_mean_std(ratio)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (minutes)")
    p.add_argument("--data", default="cifar10")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--target", default="cifar_cnn")
    p.add_argument("--k", type=int, default=20, help="evaluation (and 1-step training) k")
    p.add_argument("--train-k-multi", type=int, default=120, help="20-step sTRADES training k")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--train-subset", type=int, default=512)
    p.add_argument("--test-subset", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--saa-steps", type=int, default=10)
    p.add_argument("--saa-queries", type=int, default=100)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--out", default=None, help="JSON file for the results")
    a = p.parse_args(argv)
    if a.quick:
        a.epochs, a.seeds, a.train_subset, a.test_subset = 2, 1, 256, 32
        a.saa_steps, a.saa_queries, a.batch_size = 5, 40, 64
    if a.data == "digits":
        a.k, a.train_k_multi = min(a.k, 2), min(a.train_k_multi, 12)
    torch.set_num_threads(a.threads)
    base = [f"data={a.data}", "threat=l0", f"threat.k={a.k}", f"batch_size={a.batch_size}",
            f"epochs={a.epochs}", "progress=false", "device=cpu", "monitor.enabled=false",
            f"data.train_subset={a.train_subset}", f"data.test_subset={a.test_subset}",
            f"eval.test_subset={a.test_subset}", "optim.schedule=constant", f"optim.lr={a.lr}",
            "checkpoint_dir=/tmp/sparse_bench"]
    if a.data != "digits":
        base += [f"data.root={a.data_root}", f"target={a.target}"]
    overrides = methods(a.train_k_multi)
    names = list(overrides)
    load = open("/proc/loadavg").read().split()[:3] if a.data else []
    print(f"conditions: torch threads={a.threads}, load avg={' '.join(load)}, data={a.data}, "
          f"target={a.target if a.data != 'digits' else 'auto'}, k={a.k}, "
          f"train_k_multi={a.train_k_multi}, train_subset={a.train_subset}, "
          f"test_subset={a.test_subset}, batch={a.batch_size}, epochs={a.epochs}, "
          f"seeds={a.seeds}, lr={a.lr} constant, sAA={a.saa_steps} sPGD steps/stage + "
          f"{a.saa_queries} RS queries", flush=True)
    t0 = time.perf_counter()
    rows: list[dict[str, float]] = []
    for seed in range(a.seeds):
        rows += run_seed(base, overrides, seed, a.epochs,
                         (a.test_subset, a.k, a.saa_steps, a.saa_queries))
    print("\n" + epoch_table(rows, names) + "\n")
    print(summary_table(rows, names, a.epochs) + "\n")
    print(f"wall time {time.perf_counter() - t0:.0f} s, load avg at the end "
          f"{' '.join(open('/proc/loadavg').read().split()[:3])}", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"args": vars(a), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
