"""The attack loop: a PGD-10 AT step through the env and the co-training loop vs a hand-written
one (goal ≤ 1.05), and compaction (half the samples stopping after one step, goal ≤ 0.60)."""

from __future__ import annotations

import itertools

import pytest

from benchmarks.speed import SHAPES, bench_at_step, bench_compaction, synthetic_data
from learned_at.runners.compose import compose_config
from learned_at.runners.run import build_run
from learned_at.runners.train import train_step


@pytest.mark.parametrize("model", ["digits_cnn", "cifar_cnn"])
def test_pgd10_at_step(benchmark, model):
    shape = SHAPES.get(model, (3, 32, 32))
    run = build_run(compose_config(["policy=pgd_at", f"target={model}", "batch_size=128",
                                    "threat.eps=0.03137", "device=cpu", "progress=false",
                                    "threads=1"]), data=synthetic_data(shape, 256))
    batch = next(iter(run.loader))
    steps = itertools.count()
    benchmark.pedantic(lambda: train_step(run, batch, 0, next(steps)), rounds=5,
                       warmup_rounds=1)
    ratios = bench_at_step(model, 128, 10, 3, "cpu")
    benchmark.extra_info["framework/hand_written"] = ratios["framework/hand_written"]


def test_compaction(benchmark):
    ratios = bench_compaction("cifar_cnn", 128, 10, 3, "cpu")
    benchmark.extra_info["half_stop/full"] = ratios["half_stop/full"]
    benchmark.pedantic(lambda: bench_compaction("cifar_cnn", 128, 10, 1, "cpu"), rounds=2)
