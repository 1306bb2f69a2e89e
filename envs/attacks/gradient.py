"""White-box gradient evaluation attacks run by our own PGD code (:mod:`envs.pgd`).

* ``fgsm`` (:class:`FGSM`): one step of the geometry's full step scale from the clean point
  (:func:`envs.pgd.fgsm_attack`; for L0 one full-magnitude sPGD step).
* ``pgd<K>[x<R>]`` (:class:`PGD`): K steps of α = 1/4 of the geometry's step scale (ε/4 for
  L∞/L2; for L0 the geometry's own sPGD ascent, α = 0.25) from a random start, CE loss, R
  restarts (default 1) of which each attacks only the examples no earlier restart fooled
  (:func:`envs.pgd.pgd_attack`), so ``pgd50x10`` is the strong evaluation PGD.
* ``cw<K>[x<R>]`` (:class:`CW`): the same with the CW margin loss.

All three may be crafted on a surrogate (:mod:`envs.attacks.transfer`). For the masking checks
PGD and CW compare by (steps, restarts) and strengthen to ``<K·2>x2``; the ensemble
(AutoAttack) must not be weaker than PGD.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from learned_at.envs.attack_loss import AttackLoss
from learned_at.envs.attacks.base import AttackRole, BatchAttack
from learned_at.envs.geometry.base import Geometry
from learned_at.envs.pgd import fgsm_attack, pgd_attack

PGD_STEP_RATIO = 0.25
"""α as a fraction of the geometry's step scale (ε/4 for L∞/L2)."""


@dataclass(frozen=True)
class FGSM(BatchAttack):
    """FGSM (Goodfellow et al., 2015): one signed-gradient step of size ε, no random start.

    Shape: x (N, C, H, W) in [0, 1], y (N,) -> x_adv (N, C, H, W).
    """

    name: str = "fgsm"
    spelling: ClassVar[str] = "fgsm"
    roles: ClassVar[AttackRole] = AttackRole.WHITEBOX
    transferable: ClassVar[bool] = True

    @classmethod
    def parse(cls, name: str) -> FGSM | None:
        return cls(name) if name == "fgsm" else None

    @classmethod
    def default(cls) -> FGSM:
        return cls()

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, geometry: Geometry,
                eps: float, generator: torch.Generator | None) -> torch.Tensor:
        return fgsm_attack(model, x, y, geometry=geometry, eps=eps)


@dataclass(frozen=True)
class _StepAttack(BatchAttack):
    """PGD-style attack: ``<prefix><K>[x<R>]`` = K steps, R restarts, the class's loss.

    Attributes:
        name: as written. steps: iterations K. restarts: random restarts R.
    """

    name: str
    steps: int
    restarts: int = 1
    roles: ClassVar[AttackRole] = AttackRole.WHITEBOX
    transferable: ClassVar[bool] = True
    prefix: ClassVar[str] = ""
    loss: ClassVar[AttackLoss] = AttackLoss.CE

    @classmethod
    def parse(cls, name: str) -> _StepAttack | None:
        m = re.fullmatch(rf"{cls.prefix}(\d+)(?:x(\d+))?", name)
        return None if m is None else cls(name, int(m[1]), int(m[2] or 1))

    def strength(self) -> tuple[int, ...]:
        return (self.steps, self.restarts)

    def stronger(self) -> _StepAttack:
        steps = 2 * self.steps
        return type(self)(f"{self.prefix}{steps}x2", steps, 2)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, geometry: Geometry,
                eps: float, generator: torch.Generator | None) -> torch.Tensor:
        return pgd_attack(model, x, y, geometry=geometry, eps=eps,
                          alpha=geometry.step_size(eps, PGD_STEP_RATIO), steps=self.steps,
                          restarts=self.restarts, loss=self.loss, generator=generator)


@dataclass(frozen=True)
class PGD(_StepAttack):
    """PGD (Madry et al., 2018) with the CE loss and restarts (``pgd<K>[x<R>]``).

    Shape: x (N, C, H, W) in [0, 1], y (N,) -> x_adv (N, C, H, W).
    """

    spelling: ClassVar[str] = "pgd<K>[x<R>]"
    ensemble_reference: ClassVar[bool] = True
    prefix: ClassVar[str] = "pgd"
    loss: ClassVar[AttackLoss] = AttackLoss.CE


@dataclass(frozen=True)
class CW(_StepAttack):
    """PGD on the CW margin loss (Carlini & Wagner, 2017), with restarts (``cw<K>[x<R>]``).

    Shape: x (N, C, H, W) in [0, 1], y (N,) -> x_adv (N, C, H, W).
    """

    spelling: ClassVar[str] = "cw<K>[x<R>]"
    prefix: ClassVar[str] = "cw"
    loss: ClassVar[AttackLoss] = AttackLoss.MARGIN
