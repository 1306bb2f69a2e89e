"""Atomic checkpoints and RNG state capture.

Checkpoints are plain ``torch.save`` dictionaries of tensors and python primitives, so they
load with ``weights_only=True`` (no arbitrary code runs when a checkpoint is opened).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "load_checkpoint", "restore_rng_state", "rng_state", "save_checkpoint"]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or not a checkpoint of this project."""


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Saves ``state`` atomically: an interrupted save never leaves a half-written file.

    The state goes to a temporary file in the same folder, is fsynced, and then replaces
    ``path`` with :func:`os.replace`. The folder is created if needed.

    Args:
        path: Destination file.
        state: Dictionary of tensors and python primitives.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Makes the rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path) -> dict:
    """Loads a checkpoint onto the CPU with ``weights_only=True``.

    Args:
        path: Checkpoint file.

    Returns:
        The saved dictionary.

    Raises:
        CheckpointError: The file is missing, corrupt or truncated, needs unsafe globals, or
            does not hold a dictionary.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    hint = (
        "Start a fresh run (without resuming), or point to another run id whose "
        "checkpoint is intact."
    )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot load checkpoint {path}: the file is corrupt or truncated, or not a "
            f"checkpoint of this project ({type(exc).__name__}: {_first_line(exc)}). {hint}"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} is not a checkpoint of this project (it holds a {type(state).__name__}, "
            f"not a dict). {hint}"
        )
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def rng_state(generators: Mapping[str, torch.Generator]) -> dict[str, Any]:
    """Captures the torch RNG states (CPU global, CUDA if available, named generators).

    Args:
        generators: Named generators owned by the caller (e.g. ``{"data": g}``).

    Returns:
        ``{"torch": ByteTensor, "cuda": [ByteTensor, ...] (only with CUDA),
        "generators": {name: ByteTensor}}``: tensors only, so it loads with ``weights_only``.
    """
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "generators": {name: gen.get_state() for name, gen in generators.items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], generators: Mapping[str, torch.Generator]) -> None:
    """Restores :func:`rng_state` output.

    CUDA states are restored for the devices present in both the state and this machine.

    Args:
        state: Output of :func:`rng_state` (possibly loaded from a checkpoint).
        generators: The generators to restore, by the names they were captured under.

    Raises:
        CheckpointError: A generator has no saved state.
    """
    saved = state.get("generators", {})
    missing = [name for name in generators if name not in saved]
    if missing:
        raise CheckpointError(
            f"no saved RNG state for generator(s) {missing}; saved: {sorted(saved)}"
        )
    torch.set_rng_state(state["torch"])
    for name, gen in generators.items():
        gen.set_state(saved[name])
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available():
        for index in range(min(len(cuda_states), torch.cuda.device_count())):
            torch.cuda.set_rng_state(cuda_states[index], index)
