"""TRADES (Zhang et al. 2019): CE(f(x), y) + β·KL(f(x) ‖ f(x_adv)); the attack maximises the KL.

sTRADES (Zhong et al., L0): the same loss with β = 3 and a CE attack (the reference's sPGD
ascends the CE, not the KL; docs/seeds.md §6.3). Both come from the geometry
(:attr:`envs.geometry.base.Geometry.at_loss_defaults`) when ``at_loss.beta`` / ``at_loss.attack``
are left unset, so ``threat=l0 at_loss=trades`` is sTRADES and ``threat=linf at_loss=trades`` is
TRADES (β = 6, KL attack). With soft labels (Fast-LS-ℓ0) the clean CE term uses the SAT targets
and weights; the KL term is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

import torch
from torch import nn

from envs.attack_loss import AttackLoss, kl_loss
from envs.options import parse_option
from envs.result import AttackResult
from targets.inputs import TargetInputs
from targets.losses.base import (ATLoss, ATLossConfig, ATLossOutput, LossContext,
                                 register_at_loss, soft_cross_entropy)
from targets.losses.soft_labels import soft_target_ce

DEFAULT_BETA = 6.0
"""TRADES' β where the geometry sets none (Zhang et al.; LAS-TRADES)."""


class TradesAttack(str, Enum):
    """The objective the attack ascends for TRADES."""

    kl = "kl"  # KL(f(x) ‖ f(x_adv)) (TRADES)
    ce = "ce"  # CE(f(x_adv), y) (sTRADES' sPGD)


@dataclass(frozen=True)
class TradesConfig(ATLossConfig):
    """TRADES.

    Attributes:
        name: registry id.
        beta: trade-off β; None = the geometry's default (L0 3, else 6); a policy may override
            it per sample (``TargetInputs.beta``).
        attack: what the attack maximises: ``kl`` or ``ce``; None = the geometry's default
            (L0 ce, else kl).
    """

    name: str = "trades"
    beta: float | None = None
    attack: TradesAttack | None = None

    def __post_init__(self) -> None:
        if self.attack is not None:
            object.__setattr__(self, "attack", parse_option(TradesAttack, self.attack,
                                                            "at_loss.attack"))


@register_at_loss(TradesConfig)
class Trades(ATLoss):
    """TRADES with an optional per-sample β (LAS-TRADES picks β per sample)."""

    attack_loss: ClassVar[AttackLoss] = AttackLoss.KL
    supports_soft_labels: ClassVar[bool] = True

    def bind(self, context: LossContext) -> None:
        super().bind(context)
        attack = TradesAttack(self.setting("attack", TradesAttack.kl))
        self.attack_loss = AttackLoss.KL if attack is TradesAttack.kl else AttackLoss.CE

    @property
    def beta(self) -> float:
        """The configured β, else the geometry's, else 6."""
        return float(self.setting("beta", DEFAULT_BETA))

    def compute(self, model: nn.Module, result: AttackResult, inputs: TargetInputs
                ) -> ATLossOutput:
        x, y = result.x, result.y
        n = x.shape[0]
        logits = model(torch.cat([x, result.x_adv]))
        clean, adv = logits[:n], logits[n:]
        soft = self.soft_targets(model, result, clean, adv)
        if soft is None:
            ce = soft_cross_entropy(clean, y, self.true_class_prob(inputs))
        else:
            ce = soft_target_ce(clean, soft[0]) * soft[1]
        kl = kl_loss(adv, clean)
        beta = self.beta if inputs.beta is None else inputs.beta.to(kl.dtype)
        per = ce + beta * kl
        loss = per.mean()
        parts = {"loss": loss.detach(), "clean_ce": ce.mean().detach(), "kl": kl.mean().detach()}
        return ATLossOutput(loss, parts, adv.detach(), per.detach())
