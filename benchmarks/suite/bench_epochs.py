"""Epoch times on digits: the embedded default run as a user gets it (LAS-AT, all 1 437
training images, the default threads) and one epoch of 512 images per policy / AT loss on one
thread."""

from __future__ import annotations

import os

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
    trainer = Stepper(make_run(["device=cpu", "progress=false", *overrides]))
    epochs = iter(range(1 << 30))
    trainer.train_epoch(next(epochs))  # warm-up
    benchmark.pedantic(lambda: trainer.train_epoch(next(epochs)), rounds=rounds)


def test_default_run_epoch(benchmark):
    import torch

    torch.set_num_threads(os.cpu_count() or 1)  # as a fresh process starts; threads=0 decides
    _epochs([], benchmark, rounds=2)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_policy_epoch(benchmark, name):
    _epochs([*POLICIES[name], "data.train_subset=512", "threads=1"], benchmark, rounds=2)
