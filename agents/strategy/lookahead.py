"""The look-ahead reward terms shared by LAS-AT (REINFORCE) and PPO: one implementation.

Reference (docs/seeds.md §1.5): R1 = the AT loss of f_w on the policy's examples; ŵ = w after
one plain SGD step on those examples (:meth:`targets.target.Target.lookahead`, taken before
the target's own step); R2 = f_ŵ's correctness under PGD-10 with 2 restarts at the nominal
ε (α = ε/4); R3 = f_ŵ's clean correctness, f_ŵ in eval mode. Per sample here: LAS-AT
averages them into one scalar per batch (its reference form), PPO keeps them per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from envs.attack_env import target_mode
from envs.geometry.base import Geometry
from envs.pgd import pgd_attack
from envs.result import AttackResult
from targets.losses.base import ATLossOutput


@dataclass(frozen=True)
class LookaheadConfig:
    """The R2 attack on ŵ.

    Attributes:
        pgd_steps: PGD iterations (reference 10).
        pgd_restarts: PGD restarts (reference 2).
        alpha_ratio: PGD step size as a multiple of the nominal ε (reference 1/4).
    """

    pgd_steps: int = 10
    pgd_restarts: int = 2
    alpha_ratio: float = 0.25


@dataclass(frozen=True)
class RewardTerms:
    """Per-sample reward terms of one batch (all detached).

    Shape:
        r1: (N,) AT loss per sample on the policy's examples at w (unclamped);
        r2: (N,) 1.0 where f_ŵ classifies the PGD example correctly;
        r3: (N,) 1.0 where f_ŵ classifies the clean sample correctly.
    """

    r1: torch.Tensor
    r2: torch.Tensor
    r3: torch.Tensor


def lookahead_terms(result: AttackResult, out: ATLossOutput, geometry: Geometry, eps: float,
                    config: LookaheadConfig, generator: torch.Generator | None
                    ) -> RewardTerms:
    """R1 from the target's step, R2 and R3 from the look-ahead ŵ it took (``out.lookahead``).

    Raises:
        ValueError: the step took no look-ahead (the policy must ask for it in its
            ``target_inputs``).
    """
    shadow: nn.Module | None = out.lookahead
    if shadow is None:
        raise ValueError("the look-ahead reward needs the target's ŵ: return "
                         "TargetInputs(lookahead=True) from target_inputs on learning batches")
    x, y = result.x, result.y
    x_rob = pgd_attack(shadow, x, y, geometry=geometry, eps=eps,
                       alpha=geometry.step_size(eps, config.alpha_ratio),
                       steps=config.pgd_steps, restarts=config.pgd_restarts,
                       generator=generator)
    with torch.no_grad(), target_mode(shadow, False):
        logits = shadow(torch.cat([x_rob, x]))
    correct = (logits.argmax(1) == torch.cat([y, y])).float()
    n = x.shape[0]
    return RewardTerms(r1=out.per_sample.detach(), r2=correct[:n], r3=correct[n:])
