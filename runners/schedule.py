"""Learning-rate schedules as multipliers of the peak rate, stepped once per batch."""

from __future__ import annotations

from typing import Callable

import torch


def lr_multiplier(schedule: str, total_steps: int, milestones: list[float], gamma: float,
                  cyclic_peak: float) -> Callable[[int], float]:
    """Return f(step) -> multiplier of the peak lr.

    ``piecewise``: gamma^(number of milestones passed), milestones as fractions of training.
    ``cyclic``: linear 0 → 1 until ``cyclic_peak``·total, then linear 1 → 0 at the end.
    ``constant``: 1.
    """
    total = max(total_steps, 1)
    if schedule == "piecewise":
        bounds = [m * total for m in milestones]
        return lambda s: gamma ** sum(s >= b for b in bounds)
    if schedule == "cyclic":
        peak = max(cyclic_peak * total, 1.0)
        return lambda s: s / peak if s < peak else max(0.0, (total - s) / max(total - peak, 1.0))
    if schedule == "constant":
        return lambda s: 1.0
    raise ValueError(f"unknown lr schedule {schedule!r}; valid: piecewise, cyclic, constant")


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int,
                   milestones: list[float], gamma: float, cyclic_peak: float
                   ) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-batch ``LambdaLR`` for the schedule (its state_dict makes it resumable)."""
    f = lr_multiplier(schedule, total_steps, milestones, gamma, cyclic_peak)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, f)
