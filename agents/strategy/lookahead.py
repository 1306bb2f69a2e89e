"""The look-ahead reward terms shared by LAS-AT (REINFORCE) and PPO: one implementation.

Reference (docs/references.md §1.5, §8): R1 = the AT loss of f_w on the policy's examples; ŵ = w
after one plain SGD step on those examples (:meth:`targets.target.Target.lookahead`, taken
before the target's own step, with the policy's label smoothing); R2 = f_ŵ's correctness under
PGD-10 with 2 restarts at the nominal ε (α = ε/4); R3 = f_ŵ's clean correctness, f_ŵ in eval
mode. Per sample here: LAS-AT averages them into one scalar per batch (its reference form),
PPO keeps them per sample. The per-sample cross-entropies of f_ŵ on the same two inputs are
returned too, for the paper's form of the reward (L2 = −CE(f_ŵ(x_adv)), L3 = −CE(f_ŵ(x))).

The R2 attack (:class:`RewardAttack`):

* ``eval`` (default): the evaluation PGD of :func:`envs.pgd.pgd_attack` — f_ŵ in eval mode,
  each restart attacks the samples no earlier restart fooled.
* ``reference``: the reference code's ``attack_pgd`` (:func:`envs.pgd.pgd_attack_max_loss`) —
  f_ŵ in **train** mode during the attack (batch statistics; its running statistics are
  updated before the eval-mode accuracies), per-step early stop, max-loss restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from learned_at.envs.options import setting
from learned_at.envs.attack_env import target_mode
from learned_at.envs.geometry.base import Geometry
from learned_at.envs.pgd import pgd_attack, pgd_attack_max_loss
from learned_at.envs.result import AttackResult
from learned_at.targets.losses.base import ATLossOutput


class RewardAttack(str, Enum):
    """The PGD that measures R2 on the look-ahead ŵ."""

    eval = "eval"            # evaluation PGD, ŵ in eval mode (default)
    reference = "reference"  # the reference's: ŵ in train mode, early stop, max-loss restarts


@dataclass(frozen=True)
class LookaheadConfig:
    """The R2 attack on ŵ."""

    pgd_steps: int = setting(10, "PGD iterations (reference 10).")
    pgd_restarts: int = setting(2, "PGD restarts (reference 2).")
    alpha_ratio: float = setting(0.25, "PGD step size as a multiple of the nominal ε (reference "
                                       "1/4).")
    attack: RewardAttack = setting(RewardAttack.eval, "eval or reference (see the module "
                                                      "docstring).")


@dataclass(frozen=True)
class RewardTerms:
    """Per-sample reward terms of one batch (all detached).

    Shape:
        r1: (N,) AT loss per sample on the policy's examples at w (unclamped);
        r2: (N,) 1.0 where f_ŵ classifies the PGD example correctly;
        r3: (N,) 1.0 where f_ŵ classifies the clean sample correctly;
        ce_robust: (N,) CE of f_ŵ on the PGD example (the paper's L2 = −ce_robust);
        ce_clean: (N,) CE of f_ŵ on the clean sample (the paper's L3 = −ce_clean).
    """

    r1: torch.Tensor
    r2: torch.Tensor
    r3: torch.Tensor
    ce_robust: torch.Tensor
    ce_clean: torch.Tensor


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
    alpha = geometry.step_size(eps, config.alpha_ratio)
    if RewardAttack(config.attack) is RewardAttack.reference:
        x_rob = pgd_attack_max_loss(shadow, x, y, geometry=geometry, eps=eps, alpha=alpha,
                                    steps=config.pgd_steps, restarts=config.pgd_restarts,
                                    train_bn=True, early_stop=True, generator=generator)
    else:
        x_rob = pgd_attack(shadow, x, y, geometry=geometry, eps=eps, alpha=alpha,
                           steps=config.pgd_steps, restarts=config.pgd_restarts,
                           generator=generator)
    with torch.no_grad(), target_mode(shadow, False):
        logits = shadow(torch.cat([x_rob, x]))
    yy = torch.cat([y, y])
    correct = (logits.argmax(1) == yy).float()
    ce = F.cross_entropy(logits, yy, reduction="none")
    n = x.shape[0]
    return RewardTerms(r1=out.per_sample.detach(), r2=correct[:n], r3=correct[n:],
                       ce_robust=ce[:n], ce_clean=ce[n:])
