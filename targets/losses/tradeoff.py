"""The trade-off loss (1 − a)·L(f(x), y) + a·L(f(x + δ), y): the "Tradeoff" column of the
Fast-LS-ℓ0 paper's ablation (docs/references.md §8; its poster writes L = (1 − a)·L(x) +
a·max_δ L(x + δ)), with L the cross-entropy and a CE attack.

Clean and adversarial batches are forwarded separately (BatchNorm statistics are not mixed).
With soft labels both CE terms use the SAT targets and weights. The paper's value of a is not
in the material read; the default 0.5 weighs both terms equally.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from learned_at.envs.attack_loss import AttackLoss
from learned_at.envs.options import setting, FRACTION, Limit
from learned_at.envs.result import AttackResult
from learned_at.targets.inputs import TargetInputs
from learned_at.targets.losses.base import (ATLoss, ATLossConfig, ATLossOutput, register_at_loss,
                                            soft_cross_entropy, weighted_mean)
from learned_at.targets.losses.soft_labels import soft_target_ce


@dataclass(frozen=True)
class TradeoffConfig(ATLossConfig):
    """Trade-off loss."""

    limits: ClassVar[dict[str, Limit]] = {**ATLossConfig.limits, "a": FRACTION}

    name: str = setting("tradeoff", "registry id.")
    a: float = setting(0.5, "weight of the adversarial term, in [0, 1] (0 = standard training, 1 "
                            "= sAT / CE-AT).")

    def __post_init__(self) -> None:
        if not 0 <= self.a <= 1:
            raise ValueError(f"at_loss.a must be in [0, 1], got {self.a}")


@register_at_loss(TradeoffConfig)
class Tradeoff(ATLoss):
    """(1 − a)·CE(f(x)) + a·CE(f(x_adv)) per sample (module docstring)."""

    attack_loss: AttackLoss = AttackLoss.CE
    supports_soft_labels: ClassVar[bool] = True

    def compute(self, model: nn.Module, result: AttackResult, inputs: TargetInputs
                ) -> ATLossOutput:
        clean, adv = model(result.x), model(result.x_adv)
        soft = self.soft_targets(model, result, clean, adv)
        if soft is None:
            tcp = self.true_class_prob
            ce_clean = soft_cross_entropy(clean, result.y, tcp)
            ce_adv = soft_cross_entropy(adv, result.y, tcp)
        else:
            ce_clean = soft_target_ce(clean, soft[0]) * soft[1]
            ce_adv = soft_target_ce(adv, soft[0]) * soft[1]
        a = self.config.a
        per = (1 - a) * ce_clean + a * ce_adv
        loss = weighted_mean(per, inputs.weight)  # a policy's per-sample weights (Dynamic)
        parts = {"loss": loss.detach(), "clean_ce": ce_clean.mean().detach(),
                 "adv_ce": ce_adv.mean().detach()}
        return ATLossOutput(loss, parts, adv.detach(), per.detach())
