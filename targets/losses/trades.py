"""TRADES (Zhang et al. 2019): CE(f(x), y) + β·KL(f(x) ‖ f(x_adv)); the attack maximises the KL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from envs.attack_loss import AttackLoss, kl_loss
from envs.options import NON_NEGATIVE, Limit
from envs.result import AttackResult
from targets.inputs import TargetInputs
from targets.losses.base import (ATLoss, ATLossConfig, ATLossOutput, register_at_loss,
                                 soft_cross_entropy)


@dataclass(frozen=True)
class TradesConfig(ATLossConfig):
    """TRADES.

    Attributes:
        name: registry id.
        beta: trade-off β; a policy may override it per sample (``TargetInputs.beta``).
    """

    limits: ClassVar[dict[str, Limit]] = {**ATLossConfig.limits, "beta": NON_NEGATIVE}

    name: str = "trades"
    beta: float = 6.0


@register_at_loss(TradesConfig)
class Trades(ATLoss):
    """TRADES with an optional per-sample β (LAS-TRADES picks β per sample)."""

    attack_loss: ClassVar[AttackLoss] = AttackLoss.KL

    def compute(self, model: nn.Module, result: AttackResult, inputs: TargetInputs
                ) -> ATLossOutput:
        x, y = result.x, result.y
        n = x.shape[0]
        logits = model(torch.cat([x, result.x_adv]))
        clean, adv = logits[:n], logits[n:]
        ce = soft_cross_entropy(clean, y, self.true_class_prob(inputs))
        kl = kl_loss(adv, clean)
        beta = self.config.beta if inputs.beta is None else inputs.beta.to(kl.dtype)
        per = ce + beta * kl
        loss = per.mean()
        parts = {"loss": loss.detach(), "clean_ce": ce.mean().detach(), "kl": kl.mean().detach()}
        return ATLossOutput(loss, parts, adv.detach(), per.detach())
