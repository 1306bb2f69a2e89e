"""Choosing the device a run uses (``device=auto|cpu|cuda|cuda:<n>``)."""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """An unknown or unavailable device name."""


def pick_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("device=cuda but no CUDA device is available; use device=cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise DeviceError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:<n>")
    return torch.device(name)
