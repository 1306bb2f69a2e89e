"""The benchmarks import, and their shared loop drives runs as the runner's loop does
(benchmarks/loop.py, benchmarks/interleaved.py); the benchmarks themselves run by hand
(``python -m benchmarks.<name> --quick``)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
import torch

import benchmarks
from benchmarks.interleaved import epoch_rows, make_trainer, speed
from benchmarks.loop import Stepper, make_run, train_epoch
from learned_at.runners.train import train_step

BASE = ["data=digits", "data.train_subset=64", "data.test_subset=32", "eval.test_subset=16",
        "batch_size=32", "device=cpu", "progress=false", "threads=1"]
TINY = [*BASE, "policy=pgd_at", "policy.steps=1"]


@pytest.mark.parametrize("name", sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__)))
def test_every_benchmark_imports(name: str) -> None:
    importlib.import_module(f"benchmarks.{name}")


def test_train_epoch_is_train_step_over_the_loader() -> None:
    run, by_hand = make_run(TINY), make_run(TINY)
    means, step = train_epoch(run, 0, step=5)
    assert step == 5 + len(run.loader)
    by_hand.policy.begin_epoch(0)
    losses = [train_step(by_hand, batch, 0, 5 + i)[0]["train/loss"]
              for i, batch in enumerate(by_hand.loader)]
    assert float(means["train/loss"]) == pytest.approx(float(torch.stack(losses).mean()))
    assert "train/adv_acc" in means
    for p, q in zip(run.target.model.parameters(), by_hand.target.model.parameters()):
        assert torch.equal(p, q)


def test_stepper_keeps_the_global_step() -> None:
    stepper = Stepper(make_run(TINY))
    stepper.train_step(next(iter(stepper.run.loader)), 0)
    assert stepper.step == 1
    stepper.train_epoch(0)
    assert stepper.step == 1 + len(stepper.run.loader)


def test_interleaved_helpers_run() -> None:
    methods = {"pgd_at": ["policy=pgd_at", "policy.steps=1"], "fgsm_rs": ["policy=fgsm_rs"]}
    ratios = speed(BASE, methods, rounds=1, k=1, reference="pgd_at")
    assert ratios["wall"]["pgd_at"] == 1.0 and set(ratios["cpu"]) == set(methods)
    trainers = {name: make_trainer(BASE, m) for name, m in methods.items()}
    (row,) = epoch_rows(trainers, 1, "pgd_at", "test")
    for name in methods:
        assert 0.0 <= row[f"{name}/test_pgd_acc"] <= 1.0
        assert row[f"{name}/co"] in (0.0, 1.0)
        assert row[f"{name}/test_clean_acc"] >= 0.0
