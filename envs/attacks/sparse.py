"""The sparse (L0) evaluation attacks as classes, over :mod:`envs.attacks.spgd`,
:mod:`envs.attacks.sparse_rs` and :mod:`envs.attacks.saa`.

* ``spgd_p[<K>]`` / ``spgd_u[<K>]`` (:class:`SparsePGDProjected`,
  :class:`SparsePGDUnprojected`): evaluation sPGD with the projected / unprojected gradient, K
  steps (default 300); white-box, and the ensemble must not be weaker than either.
* ``sparse_rs[<Q>]`` (:class:`SparseRS`): the black-box Sparse-RS with Q queries (default
  10 000); the black-box attack of the masking checks under L0.
* ``sparse_autoattack[<K>x<Q>]`` (:class:`SparseAutoAttack`): Sparse-AutoAttack, sPGD-p →
  sPGD-u → Sparse-RS on the survivors with K sPGD steps per stage and Q queries; the ensemble
  of the masking checks under L0; its stages are reported as ``sparse_autoattack.<stage>``.

Every example is checked against the pixel budget k and [0, 1]
(:func:`envs.attacks.saa.check_sparse`); one that is not raises instead of being counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from tqdm.auto import tqdm

from learned_at.envs.attacks.base import (AttackContext, AttackOutcome, AttackRole, BatchAttack,
                                          EvalAttack)
from learned_at.envs.attacks.saa import (DEFAULT_RS_QUERIES, DEFAULT_SPGD_STEPS, SAA_STAGES,
                                         check_sparse, sparse_autoattack, sparse_rs_attack)
from learned_at.envs.attacks.spgd import spgd_attack
from learned_at.envs.geometry.base import Geometry
from learned_at.envs.geometry.l0 import L0, SparseGradient


@dataclass(frozen=True)
class _SparsePGD(BatchAttack):
    """Evaluation sPGD with one gradient mode, ``<prefix>[<K>]``.

    Attributes:
        name: as written. steps: sPGD iterations K.
    """

    name: str
    steps: int = DEFAULT_SPGD_STEPS
    roles: ClassVar[AttackRole] = AttackRole.WHITEBOX
    ensemble_reference: ClassVar[bool] = True
    prefix: ClassVar[str] = ""
    gradient: ClassVar[SparseGradient] = SparseGradient.projected

    @classmethod
    def parse(cls, name: str) -> _SparsePGD | None:
        m = re.fullmatch(rf"{cls.prefix}(\d+)?", name)
        return None if m is None else cls(name, int(m[1] or DEFAULT_SPGD_STEPS))

    def strength(self) -> tuple[int, ...]:
        return (self.steps,)

    def stronger(self) -> _SparsePGD:
        return type(self)(f"{self.prefix}{2 * self.steps}", 2 * self.steps)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, geometry: Geometry,
                eps: float, generator: torch.Generator | None) -> torch.Tensor:
        assert isinstance(geometry, L0)  # registered for threat=l0 only
        x_adv = spgd_attack(model, x, y, geometry=geometry, k=eps, steps=self.steps,
                            gradient=self.gradient, generator=generator)
        check_sparse(x, x_adv, eps, self.name)
        return x_adv


@dataclass(frozen=True)
class SparsePGDProjected(_SparsePGD):
    """sPGD with the projected gradient g ⊙ M (``spgd_p[<K>]``).

    Shape: x (N, C, H, W) in [0, 1], y (N,), eps = k pixels -> x_adv (N, C, H, W).
    """

    spelling: ClassVar[str] = "spgd_p[<K>]"
    prefix: ClassVar[str] = "spgd_p"
    gradient: ClassVar[SparseGradient] = SparseGradient.projected


@dataclass(frozen=True)
class SparsePGDUnprojected(_SparsePGD):
    """sPGD with the unprojected gradient g ⊙ σ(m) (``spgd_u[<K>]``).

    Shape: x (N, C, H, W) in [0, 1], y (N,), eps = k pixels -> x_adv (N, C, H, W).
    """

    spelling: ClassVar[str] = "spgd_u[<K>]"
    prefix: ClassVar[str] = "spgd_u"
    gradient: ClassVar[SparseGradient] = SparseGradient.unprojected


@dataclass(frozen=True)
class SparseRS(BatchAttack):
    """Sparse-RS, the score-based black-box random search (``sparse_rs[<Q>]``).

    Shape: x (N, C, H, W) in [0, 1], y (N,), eps = k pixels -> x_adv (N, C, H, W).
    """

    name: str = "sparse_rs"
    queries: int = DEFAULT_RS_QUERIES
    spelling: ClassVar[str] = "sparse_rs[<Q>]"
    roles: ClassVar[AttackRole] = AttackRole.BLACKBOX

    @classmethod
    def parse(cls, name: str) -> SparseRS | None:
        m = re.fullmatch(r"sparse_rs(\d+)?", name)
        return None if m is None else cls(name, int(m[1] or DEFAULT_RS_QUERIES))

    @classmethod
    def with_queries(cls, queries: int) -> SparseRS:
        return cls(f"sparse_rs{queries}", queries)

    def strength(self) -> tuple[int, ...]:
        return (self.queries,)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, geometry: Geometry,
                eps: float, generator: torch.Generator | None) -> torch.Tensor:
        x_adv = sparse_rs_attack(model, x, y, eps, queries=self.queries, generator=generator)
        check_sparse(x, x_adv, eps, self.name)
        return x_adv


@dataclass(frozen=True)
class SparseAutoAttack(EvalAttack):
    """Sparse-AutoAttack (``sparse_autoattack[<K>x<Q>]``), with the accuracy after each stage.

    Attributes:
        name: as written. steps: sPGD iterations per stage K. queries: Sparse-RS queries Q.

    Shape: x (N, C, H, W) in [0, 1], y (N,), eps = k pixels -> robust (N,) bool.
    """

    name: str = "sparse_autoattack"
    steps: int = DEFAULT_SPGD_STEPS
    queries: int = DEFAULT_RS_QUERIES
    spelling: ClassVar[str] = "sparse_autoattack[<K>x<Q>]"
    roles: ClassVar[AttackRole] = AttackRole.ENSEMBLE

    @classmethod
    def parse(cls, name: str) -> SparseAutoAttack | None:
        m = re.fullmatch(r"sparse_autoattack(\d+)?(?:x(\d+))?", name)
        return None if m is None else cls(name, int(m[1] or DEFAULT_SPGD_STEPS),
                                          int(m[2] or DEFAULT_RS_QUERIES))

    def strength(self) -> tuple[int, ...]:
        return (self.steps, self.queries)

    def robust_mask(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    geometry: Geometry, eps: float, context: AttackContext) -> AttackOutcome:
        assert isinstance(geometry, L0)  # registered for threat=l0 only
        bs = context.batch_size
        robust: list[torch.Tensor] = []
        stages: dict[str, list[torch.Tensor]] = {s: [] for s in SAA_STAGES}
        seconds = dict.fromkeys(SAA_STAGES, 0.0)
        for i in tqdm(range(0, len(x), bs), desc=f"eval {self.name}", leave=False,
                      disable=not context.progress):
            res = sparse_autoattack(model, x[i:i + bs], y[i:i + bs], eps, geometry=geometry,
                                    steps=self.steps, queries=self.queries,
                                    generator=context.generator)
            robust.append(res.robust)
            for s in SAA_STAGES:
                stages[s].append(res.stages[s])
                seconds[s] += res.seconds[s]
        return AttackOutcome(torch.cat(robust), {
            s: {"acc": torch.cat(v).float().mean().item(), "time_s": seconds[s]}
            for s, v in stages.items()})
