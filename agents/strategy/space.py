"""The attack-strategy action space shared by LAS-AT (REINFORCE) and the PPO learner: one source.

A strategy is one index per head into fixed grids: ε, α (step size) and K (iterations), plus
a TRADES β head for the TRADES variant. As a gymnasium space it is
``MultiDiscrete([len(grid) per head])``. :func:`make_strategy_space` builds it for a run from
the variant, the data set and the geometry, so both learners act on identical grids.

Grids (docs/references.md §1.1, §1.3): the LAS-AT README's CIFAR grids are multiples of
``unit = ε/8`` (ε the run's nominal budget), so CIFAR at 8/255 gives exactly its ``k/255``
grids: PGD-AT ε {3..15}, α {1..5}, K {3..14}; TRADES ε {5..9}, α {2..4}, K {7..14}, β {5..9};
AWP ε {7..15}, α {2..5}, K {8..16}. CIFAR-100 changes one head per variant (the reference's
CIFAR-100 commands): PGD-AT K {3..12}, TRADES ε {5..10}, AWP K {8..15}. The geometry turns the
ratios into its own units (:meth:`envs.geometry.base.Geometry.strategy_grids`).

MNIST (ε = 0.3) and digits (ε = 0.2): ε ∈ unit·{4..12} (half to 1.5 times the nominal budget;
the CIFAR grid's upper end, 15/8 ε ≈ 0.56 on MNIST, erases digits), α ∈ unit·{1..5} (the same
ratios as CIFAR), K ∈ {3..14} on MNIST (the reference K grid) and {2..8} on digits (cost: the
embedded default must train in about a minute on two CPU cores). TRADES adds β ∈ {5..9}.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from learned_at.envs.geometry.base import Geometry
from learned_at.envs.options import parse_option


class Variant(str, Enum):
    """LAS-AT's three reference variants (``auto``: from the run's AT loss)."""

    auto = "auto"
    pgd_at = "pgd_at"
    trades = "trades"
    awp = "awp"


def resolve_variant(variant: Variant | str, at_loss_name: str) -> Variant:
    """``auto`` -> the variant matching the run's AT loss (trades, awp, else pgd_at)."""
    variant = parse_option(Variant, variant, "policy.variant")
    if variant is Variant.auto:
        return Variant(at_loss_name) if at_loss_name in ("trades", "awp") else Variant.pgd_at
    return variant


#: grids in units of ε/8 (eps, alpha) and absolute (steps, beta), per variant (CIFAR).
_CIFAR = {
    Variant.pgd_at: {"eps": range(3, 16), "alpha": range(1, 6), "steps": range(3, 15)},
    Variant.trades: {"eps": range(5, 10), "alpha": range(2, 5), "steps": range(7, 15),
                     "beta": range(5, 10)},
    Variant.awp: {"eps": range(7, 16), "alpha": range(2, 6), "steps": range(8, 17)},
}
#: CIFAR-100 departs from the CIFAR-10 grids in one head per variant (docs/references.md §1.1, §8).
_CIFAR100 = {
    Variant.pgd_at: {**_CIFAR[Variant.pgd_at], "steps": range(3, 13)},
    Variant.trades: {**_CIFAR[Variant.trades], "eps": range(5, 11)},
    Variant.awp: {**_CIFAR[Variant.awp], "steps": range(8, 16)},
}
_SMALL = {"eps": range(4, 13), "alpha": range(1, 6), "beta": range(5, 10)}
_SMALL_STEPS = {"mnist": range(3, 15), "digits": range(2, 9)}


@dataclass(frozen=True)
class StrategySpace:
    """Grids of the strategy heads (the order of heads is fixed: eps, alpha, steps[, beta]).

    Attributes:
        eps: ε values (the geometry's budget unit).
        alpha: step sizes.
        steps: iteration counts.
        beta: TRADES β values (empty = no β head).
    """

    eps: tuple[float, ...]
    alpha: tuple[float, ...]
    steps: tuple[int, ...]
    beta: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for head, grid in self.heads.items():
            if not grid or min(grid) < 0 or (head == "steps" and min(grid) < 1):
                raise ValueError(f"policy.{head}_grid must be non-empty and positive "
                                 f"(steps >= 1), got {list(grid)}")

    @property
    def heads(self) -> dict[str, tuple[float, ...]]:
        """Head name -> grid, in action-index order."""
        heads: dict[str, tuple[float, ...]] = {"eps": self.eps, "alpha": self.alpha,
                                               "steps": tuple(float(k) for k in self.steps)}
        if self.beta:
            heads["beta"] = self.beta
        return heads

    @property
    def nvec(self) -> list[int]:
        """Number of choices per head."""
        return [len(g) for g in self.heads.values()]

    def gym_space(self) -> spaces.MultiDiscrete:
        """The per-sample action space ``MultiDiscrete(nvec)``."""
        return spaces.MultiDiscrete(np.array(self.nvec, dtype=np.int64))

    def decode(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map indices (N, n_heads) int64 to per-sample values {head: (N,)} on their device."""
        out = {}
        for j, (name, grid) in enumerate(self.heads.items()):
            table = torch.tensor(grid, dtype=torch.float32, device=indices.device)
            out[name] = table[indices[:, j]]
        out["steps"] = out["steps"].round().long()
        return out


def preset_grids(geometry: Geometry, data: str, variant: Variant, eps: float
                 ) -> dict[str, tuple[float, ...]]:
    """Default grids (absolute values) for a geometry, data set, variant and nominal budget.

    Returns ``{"eps", "alpha", "steps"[, "beta"]}``; β only for the TRADES variant.
    """
    if data in _SMALL_STEPS:
        table = dict(_SMALL, steps=_SMALL_STEPS[data])
    else:
        table = (_CIFAR100 if data == "cifar100" else _CIFAR)[variant]
    eps_grid, alpha_grid = geometry.strategy_grids(eps / 8.0, tuple(table["eps"]),
                                                   tuple(table["alpha"]))
    grids = {"eps": eps_grid, "alpha": alpha_grid,
             "steps": tuple(float(k) for k in table["steps"])}
    if variant is Variant.trades:
        grids["beta"] = tuple(float(b) for b in table.get("beta", range(5, 10)))
    return grids


def make_strategy_space(geometry: Geometry, data: str, variant: Variant, eps: float, *,
                        eps_grid: Sequence[float] | None = None,
                        alpha_grid: Sequence[float] | None = None,
                        steps_grid: Sequence[int] | None = None,
                        beta_grid: Sequence[float] | None = None) -> StrategySpace:
    """The run's strategy space: the preset grids, each replaceable by the config's own."""
    grids = preset_grids(geometry, data, variant, eps)

    def pick(given: Sequence[float] | None, key: str) -> tuple[float, ...]:
        return tuple(given) if given is not None else grids.get(key, ())

    beta = pick(beta_grid, "beta") if variant is Variant.trades else ()
    return StrategySpace(eps=tuple(float(v) for v in pick(eps_grid, "eps")),
                         alpha=tuple(float(v) for v in pick(alpha_grid, "alpha")),
                         steps=tuple(int(v) for v in pick(steps_grid, "steps")),
                         beta=tuple(float(v) for v in beta))


def resolved_grids(geometry: Geometry, data: str, variant: Variant, eps: float, *,
                   eps_grid: Sequence[float] | None = None,
                   alpha_grid: Sequence[float] | None = None,
                   steps_grid: Sequence[int] | None = None,
                   beta_grid: Sequence[float] | None = None) -> dict[str, list[Any]]:
    """The grids of :func:`make_strategy_space` as config fields (``eps_grid``, ...,
    ``beta_grid`` empty without a β head): what a strategy policy's config resolves to."""
    space = make_strategy_space(geometry, data, variant, eps, eps_grid=eps_grid,
                                alpha_grid=alpha_grid, steps_grid=steps_grid,
                                beta_grid=beta_grid)
    return {"eps_grid": list(space.eps), "alpha_grid": list(space.alpha),
            "steps_grid": [int(k) for k in space.steps], "beta_grid": list(space.beta)}
