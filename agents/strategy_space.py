"""The attack-strategy action space shared by LAS-AT (REINFORCE) and the PPO learner.

A strategy is one index per head into fixed grids: ε, α (step size) and K (iterations), plus
an optional TRADES β head. As a gymnasium space it is ``MultiDiscrete([len(grid) per head])``.

CIFAR-10 grids follow the LAS-AT README (docs/seeds.md §1.3): ε ∈ {3..15}/255,
α ∈ {1..5}/255, K ∈ {3..14}. For other data sets the ε and α grids keep the same ratios to the
run's nominal ε (ε_grid = ε·{3..15}/8, α_grid = ε·{1..5}/8), so that the nominal budget sits
at the same place of the grid; the K grid is kept unless a preset overrides it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from gymnasium import spaces


@dataclass(frozen=True)
class StrategySpace:
    """Grids of the strategy heads (plain python lists; the order of heads is fixed).

    Attributes:
        eps: ε values (input units).
        alpha: step sizes (input units).
        steps: iteration counts.
        beta: TRADES β values (empty = no β head).
    """

    eps: tuple[float, ...]
    alpha: tuple[float, ...]
    steps: tuple[int, ...]
    beta: tuple[float, ...] = ()

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


def default_strategy_space(eps: float, with_beta: bool = False,
                           steps: tuple[int, ...] = tuple(range(3, 15))) -> StrategySpace:
    """Grids scaled to the nominal ``eps`` (CIFAR-10 at 8/255 gives the LAS-AT README grids).

    Args:
        eps: the run's nominal budget.
        with_beta: add LAS-TRADES' β head over {5..9} (used as-is, no /10; seeds.md §1.7).
        steps: the K grid.
    """
    unit = eps / 8.0
    return StrategySpace(
        eps=tuple(unit * k for k in range(3, 16)),
        alpha=tuple(unit * k for k in range(1, 6)),
        steps=tuple(steps),
        beta=tuple(float(b) for b in range(5, 10)) if with_beta else (),
    )
