"""runners.distributed / targets.distributed without a process group (the one-process path)
and the settings a torchrun job refuses; the 2-rank job itself is tests/runners/test_ddp.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from learned_at.runners.distributed import (DistributedConfigError, NullTracker, World, rank_seed,
                                            world_from_env, wrap_model)
from learned_at.targets.distributed import (all_gather_cat, all_reduce_max, all_reduce_mean,
                                            average_gradients, world_size)


def test_one_process_world_without_torchrun(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    world = world_from_env()
    assert world == World() and not world.distributed and world.is_main
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert world_from_env() == World(3, 4, 1)


def test_collectives_are_the_identity_without_a_group():
    t = torch.arange(6.0).view(3, 2)
    assert world_size() == 1
    assert all_reduce_mean(t) is t and all_reduce_max(t) is t and all_gather_cat(t) is t
    p = nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    average_gradients([p])
    assert torch.equal(p.grad, torch.full((2,), 3.0))


def test_rank_seeds():
    one, r0, r1 = World(), World(0, 2, 0), World(1, 2, 1)
    assert rank_seed(7, one) == rank_seed(7, r0) == 7  # rank 0 keeps the one-process stream
    assert rank_seed(7, r1, shared=True) == 7  # the data order is drawn alike on every rank
    assert rank_seed(7, r1) != 7 and rank_seed(8, r1) != rank_seed(7, r1)
    assert rank_seed(7, r1, step=10) != rank_seed(7, r1)  # fresh streams after a resume


def test_wrap_model_one_process_is_the_model_and_sync_batchnorm_needs_cuda():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    assert wrap_model(model, World(), torch.device("cpu")) is model
    assert wrap_model(model, World(), torch.device("cpu"), sync_batchnorm=True) is model
    with pytest.raises(DistributedConfigError, match="sync_batchnorm=true needs CUDA"):
        wrap_model(model, World(0, 2, 0), torch.device("cpu"), sync_batchnorm=True)


def test_null_tracker_logs_nothing():
    tracker = NullTracker("abc")
    assert tracker.run_id == "abc" and not tracker.has_metric_at("train/loss", 0)
    assert tracker.log_metrics({"a": 1.0}, step=0) is None
    assert tracker.finish("FINISHED") is None
