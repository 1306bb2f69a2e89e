"""AutoAttack's two gradient stages alone: ``autoattack_apgd`` = APGD-CE then APGD-T.

The same attacks with the same settings as the standard AutoAttack's first two stages
(pyautoattack's ``version="custom"`` with ``apgd-ce`` and ``apgd-t``: 100 iterations, one
restart, APGD-T over 9 target classes; :func:`make_autoattack_apgd`), through the same chunked,
resumable and independently verified loop (:func:`envs.attacks.autoattack.run_autoattack`).
Leaving out FAB-T and Square makes it several times cheaper on a CPU, where Square's 5000
queries per robust point dominate the standard run; its numbers are an upper bound on the
standard AutoAttack's robust accuracy, *not* AutoAttack numbers. A report that uses it should
bound the gap with ``autoattack`` on a subset (benchmarks/fidelity.py does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from learned_at.envs.attacks.autoattack import AutoAttack, _norm_name, import_pyautoattack
from learned_at.envs.attacks.base import AttackRole
from learned_at.envs.geometry.base import Geometry

GRADIENT_STAGES = ["apgd-ce", "apgd-t"]
"""The standard AutoAttack's gradient-based stages, in its order."""


def make_autoattack_apgd(model: nn.Module, geometry: Geometry, eps: float, seed: int,
                         device: torch.device) -> Any:
    """APGD-CE and APGD-T with the standard version's settings (one restart each, 9 targets)."""
    aa = import_pyautoattack().AutoAttack(model, norm=_norm_name(geometry), eps=float(eps),
                                          seed=int(seed), device=device, version="custom",
                                          attacks=list(GRADIENT_STAGES))
    aa.apgd.n_restarts = 1
    aa.apgd_targeted.n_restarts = 1
    aa.apgd_targeted.n_target_classes = 9
    aa.verbose = False
    return aa


@dataclass(frozen=True)
class AutoAttackApgd(AutoAttack):
    """APGD-CE then APGD-T on the points still robust (``autoattack_apgd``; module docstring):
    :class:`~envs.attacks.autoattack.AutoAttack`'s loop with :func:`make_autoattack_apgd`.

    Shape: x (N, C, H, W) in [0, 1], y (N,) -> robust (N,) bool, plus one stage per attack.
    """

    name: str = "autoattack_apgd"
    spelling: ClassVar[str] = "autoattack_apgd"
    roles: ClassVar[AttackRole] = AttackRole.WHITEBOX

    @staticmethod
    def factory(model: nn.Module, geometry: Geometry, eps: float, seed: int,
                device: torch.device) -> Any:
        return make_autoattack_apgd(model, geometry, eps, seed, device)
