"""FGSM-PGI's regulariser as an AT loss usable with any policy (``at_loss=pgi``).

    L = LS-CE(f(x + δ_adv), y) + λ · mean_{N×K} (f(x + δ_adv) − f(x_init))²

where ``x_init`` = x + δ₀ is the attack's starting point, read from the episode's record
(:attr:`envs.result.AttackResult.x_init`): the prior for
``fgsm_pgi``, the generator's output for ``fgsm_sdi``, the random start for ``fgsm_rs`` (the poster's "FGSM-RS + regulariser"
ablation) and the clean input for attacks without a start. It is an MSE between *logits*
(docs/references.md §3.2-3.3), mean-reduced over N×K as in the reference code (λ = 10 there);
a policy's per-sample weights (``TargetInputs.weight``) weight the whole per-sample loss;
``reduction=sum`` sums over classes instead (the poster's ‖·‖²₂ per sample, averaged over the
batch: K times larger for the same λ).

Both forwards run in train mode (the reference's prior-point forward is the train-mode attack
forward whose graph it retains). ``prior_grad=true`` back-propagates through both branches,
as the reference; ``prior_grad=false`` treats f(x_init) as a constant (computed without a
graph: one forward instead of forward + backward; a departure offered for speed).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

import torch
from torch import nn

from learned_at.envs.attack_loss import AttackLoss
from learned_at.envs.options import setting, NON_NEGATIVE, Limit, parse_option
from learned_at.envs.result import AttackResult
from learned_at.targets.inputs import TargetInputs
from learned_at.targets.losses.base import (ATLoss, ATLossConfig, ATLossOutput, register_at_loss,
                                            soft_cross_entropy, weighted_mean)


class Reduction(str, Enum):
    """How the squared logit difference is reduced per sample."""

    mean = "mean"  # over the K classes (the reference code's mean over N×K)
    sum = "sum"    # over the K classes (the poster's ‖·‖²₂)


@dataclass(frozen=True)
class PgiLossConfig(ATLossConfig):
    """CE AT plus FGSM-PGI's logit-pairing regulariser."""

    limits: ClassVar[dict[str, Limit]] = {**ATLossConfig.limits, "lam": NON_NEGATIVE}

    name: str = setting("pgi", "registry id.")
    lam: float = setting(10.0, "regulariser weight λ (reference 10).")
    reduction: Reduction = setting(Reduction.mean, "mean over N×K (reference code) or sum over K, "
                                                   "mean over N.")
    prior_grad: bool = setting(True, "back-propagate through the prior branch f(x_init) too "
                                     "(reference).")


@register_at_loss(PgiLossConfig)
class PgiLoss(ATLoss):
    """λ-weighted squared error between the logits at the example and at the starting point."""

    attack_loss: AttackLoss = AttackLoss.CE

    def __init__(self, config: PgiLossConfig) -> None:
        super().__init__(config)
        self.reduction = parse_option(Reduction, config.reduction, "at_loss.reduction")

    def compute(self, model: nn.Module, result: AttackResult, inputs: TargetInputs
                ) -> ATLossOutput:
        """Reads x_adv, the start point x + δ₀ and y of the episode."""
        with torch.set_grad_enabled(self.config.prior_grad and torch.is_grad_enabled()):
            z_init = model(result.x_init)
        logits = model(result.x_adv)
        ce = soft_cross_entropy(logits, result.y, self.true_class_prob)
        sq = (logits - z_init).pow(2)
        reg_per = sq.mean(1) if self.reduction is Reduction.mean else sq.sum(1)  # (N,)
        per = ce + self.config.lam * reg_per
        loss = weighted_mean(per, inputs.weight)
        parts = {"loss": loss.detach(), "ce": ce.mean().detach(),
                 "pgi_reg": reg_per.mean().detach()}
        return ATLossOutput(loss, parts, logits.detach(), per.detach())
