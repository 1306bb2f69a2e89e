"""Helpers of the benchmarks that compare training methods interleaved in one process.

Interleaving (every method takes its turn each round or epoch) makes load from other processes
hit all methods alike, so the time *ratios* measured in one run are meaningful on shared CPUs.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from benchmarks.loop import Stepper, make_run
from learned_at.runners.co_monitor import COMonitor, MonitorData
from learned_at.runners.run import Run
from learned_at.runners.train import evaluate_epoch


def make_trainer(base: list[str], method: list[str]) -> Stepper:
    """A run without MLflow and its batch counter (the benchmark drives the epochs itself)."""
    return Stepper(make_run([*base, *method]))


def speed(base: list[str], methods: dict[str, list[str]], rounds: int, k: int,
          reference: str) -> dict[str, dict[str, float]]:
    """Median per-batch training time of each method relative to ``reference`` (interleaved).

    Each of ``rounds`` rounds (after one warm-up round) times ``k`` consecutive batches of
    every method (``runners.train.train_step``: attack, target step, policy update), in wall
    time and in this process's CPU time (the work done, whatever the other processes' load; with
    one torch thread it is free of spin-waiting).

    Returns:
        {"wall": {method: ratio}, "cpu": {method: ratio}, "reference_s_per_batch":
        {"wall": s, "cpu": s}}.
    """
    trainers = {name: make_trainer(base, m) for name, m in methods.items()}
    batches = {name: iter(t.run.loader) for name, t in trainers.items()}
    times: dict[str, dict[str, list[float]]] = {"wall": {n: [] for n in methods},
                                                "cpu": {n: [] for n in methods}}
    for r in range(rounds + 1):  # round 0 warms up
        for name, t in trainers.items():
            t.run.policy.begin_epoch(0)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(k):
                try:
                    b = next(batches[name])
                except StopIteration:
                    batches[name] = iter(t.run.loader)
                    b = next(batches[name])
                t.train_step(b, 0)
            if r:
                times["wall"][name].append((time.perf_counter() - t0) / k)
                times["cpu"][name].append((time.process_time() - c0) / k)
    out: dict[str, dict[str, float]] = {"reference_s_per_batch": {}}
    for clock, per in times.items():
        ref = statistics.median(per[reference])
        out[clock] = {name: statistics.median(v) / ref for name, v in per.items()}
        out["reference_s_per_batch"][clock] = ref
    return out


def epoch_rows(trainers: dict[str, Stepper], epochs: int, reference: str, label: str,
               extra: Callable[[dict[str, torch.Tensor]], dict[str, float]] | None = None
               ) -> list[dict[str, float]]:
    """Train the methods epoch by epoch in turn, each followed by the runner's per-epoch
    evaluation and the CO monitor (runners/co_monitor.py); prints one line per epoch.

    Returns:
        One row per epoch: ``epoch`` and, per method ``m``, ``m/epoch_s``, ``m/test_pgd_acc``,
        ``m/test_fgsm_acc``, ``m/train_pgd_acc``, ``m/test_clean_acc``, ``m/co``,
        ``m/time_ratio`` (epoch time / the reference's) and ``m/<key>`` for the items of
        ``extra(epoch training means)``.
    """
    monitors = {name: COMonitor(t.run.config.monitor) for name, t in trainers.items()}
    monitor_data = {name: _monitor_data(t.run, monitors[name]) for name, t in trainers.items()}
    rows = []
    for epoch in range(epochs):
        row: dict[str, float] = {"epoch": epoch + 1}
        for name, t in trainers.items():
            t0 = time.perf_counter()
            train = t.train_epoch(epoch)
            row[f"{name}/epoch_s"] = time.perf_counter() - t0
            metrics = evaluate_epoch(t.run)
            m = {**metrics, **_monitor(t.run, monitors[name], monitor_data[name], metrics)}
            for key in ("test_pgd_acc", "test_fgsm_acc", "train_pgd_acc", "co"):
                row[f"{name}/{key}"] = float(m[f"monitor/{key}"])
            row[f"{name}/test_clean_acc"] = float(m[f"{t.run.held_out_name}/clean_acc"])
            for key, value in (extra(train) if extra else {}).items():
                row[f"{name}/{key}"] = value
        for name in trainers:
            row[f"{name}/time_ratio"] = row[f"{name}/epoch_s"] / row[f"{reference}/epoch_s"]
        rows.append(row)
        print(f"{label} " + "  ".join(f"{k}={v:.3f}" for k, v in row.items()), flush=True)
    return rows


def _monitor_data(run: Run, monitor: COMonitor) -> MonitorData:
    """The CO monitor's fixed samples: the held-out split and the first training samples
    (un-augmented), as the runner's loop gives them."""
    n, train = monitor.config.train_subset, run.data.train
    return MonitorData(*run.held_out, train.images[:n].to(run.device).float() / 255,
                       train.labels[:n].to(run.device))


def _monitor(run: Run, monitor: COMonitor, data: MonitorData, metrics: dict[str, float]
             ) -> dict[str, float]:
    """The CO monitor's ``monitor/*`` metrics of the epoch; like the runner's loop, it reuses
    the epoch evaluation's held-out PGD accuracy when that is the same attack on the same
    samples."""
    c, ev, n = monitor.config, run.config.eval, len(data.held_out_y)
    same = c.pgd_steps == ev.epoch_pgd_steps and min(c.test_subset, n) == min(ev.test_subset, n)
    reuse = metrics.get(f"{run.held_out_name}/pgd_acc") if same else None
    return monitor(run.target.model, data, run.geometry, run.eps, run.config.seed,
                   ev.batch_size, reuse, run.config.progress).metrics


def speed_part(base: list[str], methods: dict[str, list[str]], rounds: int, k: int,
               reference: str) -> dict[str, dict[str, float]]:
    """:func:`speed` on one epoch's configuration of each method, its table printed; returns
    the ratios (for a benchmark's JSON results)."""
    ratios = speed([*base, "epochs=1"], methods, rounds, k, reference)
    print("\n" + speed_table(ratios, reference) + "\n", flush=True)
    return ratios


def speed_table(ratios: dict[str, dict[str, float]], reference: str) -> str:
    """Markdown table of :func:`speed`'s ratios, wall and CPU time."""
    lines = [f"| method | wall time per batch / {reference} | CPU time per batch / {reference} |",
             "|---|---|---|"]
    lines += [f"| {k} | {v:.2f} | {ratios['cpu'][k]:.2f} |" for k, v in ratios["wall"].items()]
    sec = ratios["reference_s_per_batch"]
    lines.append(f"| ({reference}: seconds per batch) | {sec['wall']:.2f} | {sec['cpu']:.2f} |")
    return "\n".join(lines)
