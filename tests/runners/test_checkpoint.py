"""Tests of runners.checkpoint."""

from __future__ import annotations

import pytest
import torch

from learned_at.runners import checkpoint
from learned_at.runners.checkpoint import (
                                           CheckpointError,
                                           load_checkpoint,
                                           restore_rng_state,
                                           rng_state,
                                           save_checkpoint,
                                           )


def _state(value: float) -> dict:
    return {"model": {"w": torch.full((3,), value)}, "epoch": 2, "name": "x", "hist": [1.0, 2.0]}


def test_round_trip_and_no_temp_left(tmp_path):
    path = tmp_path / "sub" / "ckpt.pt"
    save_checkpoint(path, _state(1.0))
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], torch.ones(3))
    assert loaded["epoch"] == 2 and loaded["hist"] == [1.0, 2.0]
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]


def test_crash_during_save_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, _state(1.0))

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _state(2.0))
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="nope.pt"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"not a checkpoint", b""])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "corrupt" in message and "fresh run" in message
    assert isinstance(info.value, RuntimeError)


def test_truncated_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, _state(1.0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


class _Custom:
    pass


def test_unsafe_globals_rejected(tmp_path):
    path = tmp_path / "pickle.pt"
    torch.save({"obj": _Custom()}, path)
    with pytest.raises(CheckpointError, match="not a checkpoint of this project"):
        load_checkpoint(path)


def test_not_a_dict(tmp_path):
    path = tmp_path / "t.pt"
    torch.save(torch.zeros(2), path)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(path)


def test_rng_round_trip_through_checkpoint(tmp_path):
    gen = torch.Generator().manual_seed(123)
    torch.rand(3)
    torch.rand(2, generator=gen)
    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state({"data": gen})})
    expected_global = torch.rand(5)
    expected_gen = torch.randn(5, generator=gen)

    torch.rand(7)  # move both streams on
    torch.rand(7, generator=gen)
    other = torch.Generator().manual_seed(999)
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"], {"data": other})
    assert torch.equal(torch.rand(5), expected_global)
    assert torch.equal(torch.randn(5, generator=other), expected_gen)


def test_restore_missing_generator():
    state = rng_state({})
    with pytest.raises(CheckpointError, match="data"):
        restore_rng_state(state, {"data": torch.Generator()})
