"""Epoch times on digits: the embedded default run (LAS-AT, all 1 437 training images) and one
epoch of 512 images per policy / AT loss."""

from __future__ import annotations

import pytest

from benchmarks.loop import Stepper, make_run

#: name -> overrides of one digits co-training
POLICIES = {
    "pgd_at": ["policy=pgd_at"], "fgsm_rs": ["policy=fgsm_rs"], "n_fgsm": ["policy=n_fgsm"],
    "fgsm_sdi": ["policy=fgsm_sdi"], "fgsm_pgi": ["policy=fgsm_pgi"],
    "dynamic": ["policy=dynamic"], "curriculum": ["policy=curriculum"],
    "las_at": ["policy=las_at"], "trades": ["policy=pgd_at", "at_loss=trades"],
    "fast_bat": ["policy=fgsm_rs", "at_loss=fast_bat"],
    "spgd_at": ["threat=l0", "threat.k=4", "policy=spgd_at"],
    "fast_ls_l0": ["threat=l0", "threat.k=4", "policy=fast_ls_l0"],
}


def _epochs(overrides: list[str], benchmark, rounds: int) -> None:
    trainer = Stepper(make_run(["device=cpu", "progress=false", "threads=1", *overrides]))
    epochs = iter(range(1 << 30))
    trainer.train_epoch(next(epochs))  # warm-up
    benchmark.pedantic(lambda: trainer.train_epoch(next(epochs)), rounds=rounds)


def test_default_run_epoch(benchmark):
    _epochs([], benchmark, rounds=2)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_policy_epoch(benchmark, name):
    _epochs([*POLICIES[name], "data.train_subset=512"], benchmark, rounds=2)
