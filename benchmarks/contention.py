"""Epoch time alone vs beside a CPU hog, for each thread setting (one run).

Each cell is a fresh process (OpenMP reads its environment once, when torch loads) that trains
a co-training for a few epochs and reports the median training-epoch time after the first.
Variants (``--variants``):

* ``before``: torch's defaults — one intra-op thread per core, OpenMP's default wait policy
  (a short spin, then sleep), torch loaded before the project.
* ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` (workers sleep at once), one thread per core — the
  project's default before the thread governor.
* ``spin20k``: ``GOMP_SPINCOUNT=20000`` (a bounded spin), one thread per core.
* ``active``: ``OMP_WAIT_POLICY=ACTIVE`` (workers spin), one thread per core.
* ``adaptive``: ``threads=0`` — the project's default: OpenMP's own wait policy and a team
  sized to the CPUs other processes leave free (runners/thread_governor.py).
* ``one``: ``threads=1`` (no intra-op team at all).

Workloads (``--workload``): ``digits`` (the embedded default data, ``--policy``, default
LAS-AT, ``--subset`` training samples) and ``cifar`` (``cifar_cnn`` on CIFAR-10 from
``--data-root``, ``--subset`` samples, PGD-AT). Conditions: ``alone`` (no process of ours
beside it; the machine's background load is reported) and ``hog`` (``--hogs`` busy-looping
Python processes started by the benchmark). The cells are interleaved, ``--reps`` times, so
background load drifts hit every variant alike; the table reports medians, the slowdown
hog/alone per variant and each variant's time relative to the fastest alone.

Usage::

    python -m benchmarks.contention [--quick] [--reps 2] [--hogs 1] [--workload digits]
        [--variants before,passive,adaptive,one] [--policy pgd_at]

Results: the table in README.md, "CPU threads on a shared machine".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"before": "torch defaults (threads per core, OpenMP's wait policy)",
            "passive": "OMP_WAIT_POLICY=PASSIVE, threads per core (the earlier default)",
            "spin20k": "GOMP_SPINCOUNT=20000, threads per core",
            "active": "OMP_WAIT_POLICY=ACTIVE, threads per core",
            "adaptive": "threads=0: OpenMP's wait policy, team = free CPUs (the default)",
            "one": "threads=1"}
#: per variant: the OpenMP environment and the ``threads=`` value (None: torch's count)
SETTINGS: dict[str, tuple[dict[str, str], int | None]] = {
    "before": ({}, None), "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, None),
    "spin20k": ({"GOMP_SPINCOUNT": "20000"}, None), "active": ({"OMP_WAIT_POLICY": "ACTIVE"}, None),
    "adaptive": ({}, 0), "one": ({}, 1)}
OPENMP_ENV = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")


def workload_overrides(workload: str, subset: int, policy: str, data_root: str) -> list[str]:
    """The co-training of a workload (``digits`` or ``cifar``)."""
    base = ["device=cpu", "progress=false", f"policy={policy}"]
    if subset:
        base.append(f"data.train_subset={subset}")
    if workload == "cifar":
        return [*base, "data=cifar10", f"data.root={data_root}", "target=cifar_cnn",
                "data.test_subset=256"]
    return base


def _worker(variant: str, epochs: int, overrides: list[str]) -> None:
    """Train ``epochs`` epochs in this process and print the epoch times as JSON."""
    import torch

    from benchmarks.loop import Stepper, make_run

    threads = SETTINGS[variant][1]
    count = torch.get_num_threads() if threads is None else threads  # pinned unless 0
    trainer = Stepper(make_run([*overrides, f"threads={count}"]))
    times, used = [], []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        trainer.train_epoch(epoch)
        times.append(time.perf_counter() - t0)
        used.append(torch.get_num_threads())
    print(json.dumps({"epochs": times, "threads": used}))


def _cell(variant: str, hogs: int, args: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_ENV}
    env.update(SETTINGS[variant][0])
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    load = os.getloadavg()[0]
    hog_procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                 for _ in range(hogs)]
    overrides = workload_overrides(args.workload, args.subset, args.policy, args.data_root)
    try:
        # "before" loads torch (and OpenMP) ahead of the project, as runs did before
        prelude = "import torch; " if variant == "before" else ""
        cmd = [sys.executable, "-c", f"{prelude}from benchmarks.contention import _worker; "
               f"_worker({variant!r}, {args.epochs}, {overrides!r})"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True,
                              timeout=args.timeout)
    finally:
        for p in hog_procs:
            p.kill()
            p.wait()
    out = json.loads(done.stdout.strip().splitlines()[-1])
    measured = out["epochs"][1:] or out["epochs"]
    return {"variant": variant, "hogs": hogs, "load": load, "threads": out["threads"][-1],
            "epoch_s": statistics.median(measured), "epochs": out["epochs"]}


def run(args: argparse.Namespace) -> list[dict]:
    """All cells, interleaved ``args.reps`` times; one dict per measured cell."""
    cells = []
    for rep in range(args.reps):
        for variant in args.variants:
            for hogs in (0, args.hogs):
                cell = _cell(variant, hogs, args)
                cell["rep"] = rep
                cells.append(cell)
                print(f"  {variant:6s} hogs={hogs} load={cell['load']:.1f} "
                      f"threads={cell['threads']} epoch={cell['epoch_s']:.2f} s", flush=True)
    return cells


def table(cells: list[dict], variants: list[str], hogs: int) -> str:
    """Markdown: median epoch time alone / beside the hog, their ratio, alone vs the fastest."""
    def med(variant: str, h: int, key: str = "epoch_s") -> float:
        return statistics.median(c[key] for c in cells
                                 if c["variant"] == variant and c["hogs"] == h)

    fastest = min(med(v, 0) for v in variants)
    lines = [f"| variant | threads alone / beside | alone s/epoch (load) | beside {hogs} hog "
             "s/epoch (load) | hog / alone | alone / fastest alone |",
             "|---|---:|---:|---:|---:|---:|"]
    for v in variants:
        n = [next(c["threads"] for c in cells if c["variant"] == v and c["hogs"] == h)
             for h in (0, hogs)]
        alone, hog = med(v, 0), med(v, hogs)
        lines.append(f"| {v}: {VARIANTS[v]} | {n[0]} / {n[1]} | {alone:.2f} "
                     f"({med(v, 0, 'load'):.1f}) | {hog:.2f} ({med(v, hogs, 'load'):.1f}) | "
                     f"{hog / alone:.2f} | {alone / fastest:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 batches per epoch, 2 epochs")
    parser.add_argument("--reps", type=int, default=1, help="interleaved repetitions")
    parser.add_argument("--hogs", type=int, default=1, help="busy-looping processes beside it")
    parser.add_argument("--variants", default="before,passive,adaptive,one")
    parser.add_argument("--epochs", type=int, default=3, help="first one is the warm-up")
    parser.add_argument("--subset", type=int, default=512,
                        help="training samples (0 = all: 1437 digits, 50 000 CIFAR-10)")
    parser.add_argument("--workload", choices=("digits", "cifar"), default="digits")
    parser.add_argument("--policy", default="las_at")
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"),
                        help="folder of CIFAR-10 (--workload cifar)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per cell, seconds")
    parser.add_argument("--json", type=Path, help="also write the cells here")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.subset = 2, 256
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; valid: {', '.join(VARIANTS)}")
    print(f"{os.cpu_count()} CPUs; load before: {os.getloadavg()}; cells:", flush=True)
    cells = run(args)
    print(table(cells, args.variants, args.hogs))
    if args.json:
        args.json.write_text(json.dumps(cells, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
