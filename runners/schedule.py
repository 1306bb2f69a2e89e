"""Learning-rate schedules as multipliers of the peak rate, stepped once per batch."""

from __future__ import annotations

import math
from enum import Enum
from typing import Callable

import torch

from learned_at.envs.options import parse_option


class Schedule(str, Enum):
    """Learning-rate schedules (see :func:`lr_multiplier`)."""

    piecewise = "piecewise"
    cyclic = "cyclic"
    constant = "constant"


def lr_multiplier(schedule: Schedule | str, total_steps: int, milestones: list[float],
                  gamma: float, cyclic_peak: float) -> Callable[[int], float]:
    """Return f(step) -> multiplier of the peak lr.

    ``piecewise``: gamma^(number of milestones passed), milestones as fractions of training;
    a milestone decays from the first whole step at or after it, up to floating-point error
    (0.07 of 300 steps is step 21, although the product is 21.000000000000004).
    ``cyclic``: linear 0 → 1 until ``cyclic_peak``·total, then linear 1 → 0 at the end.
    ``constant``: 1.
    """
    total = max(total_steps, 1)
    schedule = parse_option(Schedule, schedule, "optim.schedule")
    if schedule is Schedule.piecewise:
        bounds = [_first_step(m * total) for m in milestones]
        return lambda s: gamma ** sum(s >= b for b in bounds)
    if schedule is Schedule.cyclic:
        peak = max(cyclic_peak * total, 1.0)
        return lambda s: s / peak if s < peak else max(0.0, (total - s) / max(total - peak, 1.0))
    return lambda s: 1.0


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule | str,
                   total_steps: int, milestones: list[float], gamma: float, cyclic_peak: float
                   ) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-batch ``LambdaLR`` for the schedule (its state_dict makes it resumable)."""
    f = lr_multiplier(schedule, total_steps, milestones, gamma, cyclic_peak)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, f)


def _first_step(position: float) -> int:
    """The first whole step at or after ``position``, ignoring floating-point excess."""
    return math.ceil(position - 1e-9 * max(1.0, abs(position)))
