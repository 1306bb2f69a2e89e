"""LAS-AT's reward: attack loss on the current target, then robustness of a one-step look-ahead.

Reference (docs/seeds.md §1.5): R1 = clamp(AT loss of f_w on the examples, 0, c); ŵ = a deepcopy
of w after one plain SGD step (lr = the target's current lr, weight decay of the target's
optimiser) on those examples; R2 = accuracy of f_ŵ under PGD-10 with 2 restarts at the nominal
ε (α = ε/4), R3 = clean accuracy of f_ŵ, both on the batch, f_ŵ in eval mode.

Here ŵ lives in one *persistent* shadow module and one persistent SGD optimiser (allocated at
the first snapshot, then only ``copy_``-ed into), so no model or optimiser is allocated per
update (the reference deep-copies the target and builds an optimiser every update, §1.8). The
real target's weights, buffers and optimiser state are never written (tested).

The look-ahead step goes through the run's AT loss ``train_step`` on the shadow, so LAS-TRADES
looks ahead with the TRADES loss and LAS-AWP with the AWP-perturbed step, as in the reference
(§1.7: "ŵ also receives an AWP perturbation in its one look-ahead step"). R1 is that step's
loss at w (for AWP: at the AWP-perturbed w, which the step differentiates).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from envs.attack_env import target_mode
from envs.pgd import pgd_attack
from envs.threat import ThreatModel


@dataclass
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


class LookaheadReward:
    """Persistent shadow of the target for the look-ahead ŵ (not an ``nn.Module``: it is not
    part of the policy's state, it is rebuilt from the target at every snapshot).

    Args:
        pgd_steps: iterations of the R2 attack (reference 10).
        pgd_restarts: restarts of the R2 attack (reference 2).
        pgd_alpha_ratio: R2 step size as a multiple of the nominal ε (reference 2/255 at 8/255).
    """

    def __init__(self, pgd_steps: int = 10, pgd_restarts: int = 2,
                 pgd_alpha_ratio: float = 0.25) -> None:
        self.pgd_steps, self.pgd_restarts = pgd_steps, pgd_restarts
        self.pgd_alpha_ratio = pgd_alpha_ratio
        self.shadow: nn.Module | None = None
        self.optimizer: torch.optim.SGD | None = None
        self.has_snapshot = False

    def snapshot(self, model: nn.Module) -> None:
        """Copy the target's parameters and buffers into the shadow (in place after the first
        call, which allocates the shadow once)."""
        if self.shadow is None:
            self.shadow = copy.deepcopy(model)
            for p in self.shadow.parameters():
                p.requires_grad_(True)
            self.optimizer = torch.optim.SGD(self.shadow.parameters(), lr=0.0)
        else:
            with torch.no_grad():
                for s, p in zip(self.shadow.parameters(), model.parameters()):
                    s.copy_(p)
                for s, b in zip(self.shadow.buffers(), model.buffers()):
                    s.copy_(b)
        self.has_snapshot = True

    def rollout(self, at_loss: Any, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                extras: dict[str, torch.Tensor], lr: float, weight_decay: float,
                threat: ThreatModel, eps: float, generator: torch.Generator | None
                ) -> RewardTerms:
        """One look-ahead step from the last snapshot on (x_adv, y), then evaluate f_ŵ.

        Args:
            at_loss: the run's AT loss (``targets.at_loss.ATLoss``; its ``train_step`` is used).
            x, x_adv: (N, C, H, W) clean and adversarial batch; y: (N,) labels.
            extras: per-sample inputs of the AT loss (e.g. LAS-TRADES' β).
            lr, weight_decay: the target optimiser's current values (plain SGD step, as the
                reference's freshly built optimiser takes).
            threat, eps: geometry and nominal budget of the R2 attack.
            generator: random starts of the R2 attack.

        Returns:
            :class:`RewardTerms`. The shadow is left at ŵ (the next snapshot overwrites it).
        """
        if self.shadow is None or self.optimizer is None or not self.has_snapshot:
            raise RuntimeError("LookaheadReward.rollout needs a snapshot(target) first")
        for group in self.optimizer.param_groups:
            group["lr"], group["weight_decay"] = lr, weight_decay
        out = at_loss.train_step(self.shadow, self.optimizer, x, x_adv, y, extras)
        self.has_snapshot = False  # the shadow now holds ŵ, not w
        x_rob = pgd_attack(self.shadow, x, y, threat=threat, eps=eps,
                           alpha=self.pgd_alpha_ratio * eps, steps=self.pgd_steps,
                           restarts=self.pgd_restarts, generator=generator)
        with torch.no_grad(), target_mode(self.shadow, False):
            logits = self.shadow(torch.cat([x_rob, x]))
        correct = (logits.argmax(1) == torch.cat([y, y])).float()
        n = x.shape[0]
        return RewardTerms(r1=out.per_sample.detach(), r2=correct[:n], r3=correct[n:])
