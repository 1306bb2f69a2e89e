"""Square Attack alone (Andriushchenko et al., 2020): the score-based black-box ``square[<Q>]``.

Q queries (default 5000, AutoAttack's setting), run through pyautoattack's ``version="custom"``
with the same chunked, resumable and independently verified loop as AutoAttack
(:func:`envs.attacks.autoattack.run_autoattack`, :func:`envs.attacks.autoattack.make_square`).
It needs the optional package pyautoattack and the geometry's AutoAttack norm (L∞, L2). It is
the black-box attack of the masking checks under L∞ and L2; its numbers are *not* AutoAttack
numbers (AutoAttack's own Square stage is ``autoattack.square``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from learned_at.envs.attacks.autoattack import (import_pyautoattack, make_square, run_autoattack,
                                                state_path)
from learned_at.envs.attacks.base import AttackContext, AttackOutcome, AttackRole, EvalAttack
from learned_at.envs.geometry.base import Geometry

DEFAULT_QUERIES = 5000
"""Square's queries in the standard AutoAttack."""


@dataclass(frozen=True)
class Square(EvalAttack):
    """Square Attack with ``queries`` queries per example (``square[<Q>]``).

    Shape: x (N, C, H, W) in [0, 1], y (N,) -> robust (N,) bool.
    """

    name: str = "square"
    queries: int = DEFAULT_QUERIES
    spelling: ClassVar[str] = "square[<Q>]"
    roles: ClassVar[AttackRole] = AttackRole.BLACKBOX

    @classmethod
    def parse(cls, name: str) -> Square | None:
        m = re.fullmatch(r"square(\d+)?", name)
        return None if m is None else cls(name, int(m[1] or DEFAULT_QUERIES))

    @classmethod
    def default(cls) -> Square:
        return cls()

    @classmethod
    def with_queries(cls, queries: int) -> Square:
        return cls(f"square{queries}", queries)

    @classmethod
    def check_available(cls) -> None:
        import_pyautoattack()

    def strength(self) -> tuple[int, ...]:
        return (self.queries,)

    def robust_mask(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    geometry: Geometry, eps: float, context: AttackContext) -> AttackOutcome:
        def factory(m: nn.Module, g: Geometry, e: float, s: int, d: torch.device):
            return make_square(m, g, e, s, d, queries=self.queries)

        res = run_autoattack(model, x, y, geometry, eps, batch_size=context.batch_size,
                             seed=context.seed, state_path=state_path(context, self.name),
                             progress=context.progress, make_adversary=factory)
        return AttackOutcome(res.robust)
