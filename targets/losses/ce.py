"""Cross-entropy AT (Madry et al.): minimise CE(f(x_adv), y), with optional label smoothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from envs.attack_loss import AttackLoss
from envs.result import AttackResult
from targets.inputs import TargetInputs
from targets.losses.base import (ATLoss, ATLossConfig, ATLossOutput, register_at_loss,
                                 soft_cross_entropy, weighted_mean)


@dataclass(frozen=True)
class CrossEntropyConfig(ATLossConfig):
    """Cross-entropy AT: minimise CE(f(x_adv), y).

    Attributes:
        name: registry id.
        true_class_prob: label smoothing as the probability put on the true class (1.0 = off).
    """

    name: str = "ce"


@register_at_loss(CrossEntropyConfig)
class CrossEntropy(ATLoss):
    """CE on the adversarial batch; ``inputs.weight`` (N,) weights each sample:
    loss = mean(w·CE) (Dynamic AT's reference-code re-weighting, see agents/dynamic.py)."""

    attack_loss: ClassVar[AttackLoss] = AttackLoss.CE

    def compute(self, model: nn.Module, result: AttackResult, inputs: TargetInputs
                ) -> ATLossOutput:
        logits = model(result.x_adv)
        per = soft_cross_entropy(logits, result.y, self.true_class_prob(inputs))
        loss = weighted_mean(per, inputs.weight)
        return ATLossOutput(loss, {"loss": loss.detach()}, logits.detach(), per.detach())
