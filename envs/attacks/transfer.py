"""Transfer attacks: a white-box attack crafted on a surrogate model, evaluated on the target.

``transfer_<attack>`` (:class:`Transfer`) takes any attack whose class is ``transferable``
(``fgsm``, ``pgd<K>[x<R>]``, ``cw<K>[x<R>]``), crafts its examples on
``AttackContext.surrogate`` with the same generator, and counts an example as robust when the
*target* still classifies it correctly. It is a black-box attack for the masking checks: a
transfer that beats the white-box attacks means the target's own gradients are masked.

It applies to a geometry where both it and the crafted attack are registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from learned_at.envs.attacks.base import AttackContext, AttackRole, BatchAttack, EvalAttack
from learned_at.envs.attacks.registry import EVAL_ATTACKS
from learned_at.envs.geometry.base import Geometry

PREFIX = "transfer_"


@dataclass(frozen=True)
class Transfer(BatchAttack):
    """``source`` crafted on the surrogate, evaluated on the target.

    Attributes:
        name: as written (``transfer_pgd20``).
        source: the crafted attack (a transferable :class:`BatchAttack`).

    Shape: x (N, C, H, W) in [0, 1], y (N,) -> x_adv (N, C, H, W), crafted on the surrogate.
    """

    name: str
    source: BatchAttack
    spelling: ClassVar[str] = "transfer_<fgsm|pgd..|cw..>"
    roles: ClassVar[AttackRole] = AttackRole.BLACKBOX
    needs_surrogate: ClassVar[bool] = True

    @classmethod
    def parse(cls, name: str) -> Transfer | None:
        inner = name[len(PREFIX):]
        if not name.startswith(PREFIX) or inner != inner.strip():
            return None
        return cls.crafted_from(EVAL_ATTACKS.recognise(inner), name)

    @classmethod
    def crafted_from(cls, source: EvalAttack | None, name: str | None = None
                     ) -> Transfer | None:
        if not (isinstance(source, BatchAttack) and source.transferable):
            return None
        return cls(name or f"{PREFIX}{source.name}", source)

    def requires(self) -> tuple[type[EvalAttack], ...]:
        return (type(self), *self.source.requires())

    def crafting_model(self, model: nn.Module, context: AttackContext) -> nn.Module:
        if context.surrogate is None:
            raise ValueError(f"attack {self.name!r} needs a surrogate model (surrogate=<run id>)")
        return context.surrogate

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, geometry: Geometry,
                eps: float, generator: torch.Generator | None) -> torch.Tensor:
        return self.source.perturb(model, x, y, geometry, eps, generator)
