"""Cross-entropy AT (Madry et al.; sAT for L0): minimise CE(f(x_adv), y), with optional label
smoothing or Self-Adaptive Training soft labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from learned_at.envs.options import setting
from learned_at.envs.attack_loss import AttackLoss
from learned_at.envs.result import AttackResult
from learned_at.targets.inputs import TargetInputs
from learned_at.targets.losses.base import (ATLoss, ATLossConfig, ATLossOutput, register_at_loss,
                                            soft_cross_entropy, weighted_mean)
from learned_at.targets.losses.soft_labels import soft_target_ce


@dataclass(frozen=True)
class CrossEntropyConfig(ATLossConfig):
    """Cross-entropy AT: minimise CE(f(x_adv), y)."""

    name: str = setting("ce", "registry id.")


@register_at_loss(CrossEntropyConfig)
class CrossEntropy(ATLoss):
    """CE on the adversarial batch; ``inputs.weight`` (N,) weights each sample:
    loss = mean(w·CE) (Dynamic AT's reference-code re-weighting, see agents/dynamic.py).
    With soft labels (after their warm-up) the CE is against the per-sample soft targets,
    weighted by their SAT weights."""

    attack_loss: AttackLoss = AttackLoss.CE
    supports_soft_labels: ClassVar[bool] = True

    def compute(self, model: nn.Module, result: AttackResult, inputs: TargetInputs
                ) -> ATLossOutput:
        logits = model(result.x_adv)
        soft = self.soft_targets(model, result, None, logits)
        if soft is None:
            per = soft_cross_entropy(logits, result.y, self.true_class_prob)
        else:
            per = soft_target_ce(logits, soft[0]) * soft[1]
        loss = weighted_mean(per, inputs.weight)
        return ATLossOutput(loss, {"loss": loss.detach()}, logits.detach(), per.detach())
