"""Epoch time alone vs beside a CPU hog, before and after the thread settings (one run).

Each cell is a fresh process (OpenMP reads its wait policy once, when torch loads) that trains
the default digits co-training (LAS-AT, digits_cnn, batch 128) for a few epochs and reports the
median training-epoch time after the first. Variants:

* ``before``: torch's defaults — one intra-op thread per core, OpenMP's default wait policy
  (idle workers spin); what runs got before runners/threads.py.
* ``after``: the project's defaults — ``threads=0`` (the CPUs this process may use) and
  ``OMP_WAIT_POLICY=PASSIVE`` (set by ``runners/__init__.py`` before torch loads).
* ``one``: ``threads=1`` (no intra-op pool at all), for reference.

Conditions: ``alone`` (no process of ours beside it; the machine's background load is
reported) and ``hog`` (``--hogs`` busy-looping Python processes started by the benchmark).
The cells are interleaved, ``--reps`` times, so background load drifts hit every variant
alike; the table reports medians, the slowdown hog/alone per variant and after/before.

Usage::

    python -m benchmarks.contention [--quick] [--reps 1] [--hogs 1] [--variants before,after,one]

Measured (2 cores shared with other users; load = 1-minute load average before each cell, our
hog excluded; ``--reps 1``, 4 batches per epoch, median of 2 epochs after a warm-up epoch):
see the table in README.md, "CPU threads on a shared machine".
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
VARIANTS = {"before": "torch default threads, OpenMP default (spinning) wait policy",
            "after": "threads=0 (auto) + OMP_WAIT_POLICY=PASSIVE (the project's default)",
            "one": "threads=1"}


def _worker(variant: str, epochs: int, subset: int, policy: str) -> None:
    """Train ``epochs`` epochs in this process and print the epoch times as JSON."""
    import torch

    from benchmarks.loop import Stepper, make_run

    threads = {"one": 1, "before": torch.get_num_threads()}.get(variant, 0)  # 0: auto
    overrides = [f"policy={policy}", "device=cpu", "progress=false", f"threads={threads}"]
    if subset:
        overrides.append(f"data.train_subset={subset}")
    trainer = Stepper(make_run(overrides))
    times = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        trainer.train_epoch(epoch)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"epochs": times, "threads": torch.get_num_threads()}))


def _cell(variant: str, hogs: int, args: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    load = os.getloadavg()[0]
    hog_procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                 for _ in range(hogs)]
    try:
        # "before" loads torch (and OpenMP) ahead of the project, as runs did before
        prelude = "import torch; " if variant == "before" else ""
        cmd = [sys.executable, "-c", f"{prelude}from benchmarks.contention import _worker; "
               f"_worker({variant!r}, {args.epochs}, {args.subset}, {args.policy!r})"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True,
                              timeout=args.timeout)
    finally:
        for p in hog_procs:
            p.kill()
            p.wait()
    out = json.loads(done.stdout.strip().splitlines()[-1])
    measured = out["epochs"][1:] or out["epochs"]
    return {"variant": variant, "hogs": hogs, "load": load, "threads": out["threads"],
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
    """Markdown: median epoch time alone / beside the hog, their ratio, after/before."""
    def med(variant: str, h: int) -> float:
        return statistics.median(c["epoch_s"] for c in cells
                                 if c["variant"] == variant and c["hogs"] == h)

    def load(variant: str, h: int) -> float:
        return statistics.median(c["load"] for c in cells
                                 if c["variant"] == variant and c["hogs"] == h)

    lines = [f"| variant | threads | alone s/epoch (load) | beside {hogs} hog s/epoch (load) "
             "| hog / alone | vs before, beside hog |", "|---|---:|---:|---:|---:|---:|"]
    base = med("before", hogs) if "before" in variants else None
    for v in variants:
        n = next(c["threads"] for c in cells if c["variant"] == v)
        alone, hog = med(v, 0), med(v, hogs)
        rel = f"{hog / base:.2f}" if base else "–"
        lines.append(f"| {v}: {VARIANTS[v]} | {n} | {alone:.2f} ({load(v, 0):.1f}) | "
                     f"{hog:.2f} ({load(v, hogs):.1f}) | {hog / alone:.2f} | {rel} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 batches per epoch, 2 epochs")
    parser.add_argument("--reps", type=int, default=1, help="interleaved repetitions")
    parser.add_argument("--hogs", type=int, default=1, help="busy-looping processes beside it")
    parser.add_argument("--variants", default="before,after,one")
    parser.add_argument("--epochs", type=int, default=3, help="first one is the warm-up")
    parser.add_argument("--subset", type=int, default=512,
                        help="training samples (digits; 0 = all 1437)")
    parser.add_argument("--policy", default="las_at")
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
