"""AWP (Wu et al., NeurIPS 2020): adversarial weight perturbation on top of cross-entropy AT.

One step, as in LAS-AWP's ``utils_awp.AdvWeightPerturb`` (docs/references.md §1.7):

1. a proxy copy of the model takes one SGD step (lr ``proxy_lr``) *ascending* the AT loss on
   the adversarial batch;
2. per weight tensor (parameters with more than one dimension: conv and linear weights, not
   biases or BatchNorm), the change is rescaled relative to the weight:
   v_l = γ · ‖w_l‖ / (‖Δ_l‖ + 1e-20) · Δ_l, with Δ_l = w_proxy,l − w_l;
3. the model's step is taken at w + v (the gradient of the AT loss there), then v is removed.

``at_loss=awp`` works with any policy (``policy=pgd_at at_loss=awp`` is plain AWP-AT;
``policy=las_at at_loss=awp`` is LAS-AWP). The proxy module and its optimiser are allocated once
(at the first step) as a :class:`~targets.shadow.Shadow` and reloaded from the model at every
step, so the same instance serves the target and its look-ahead ŵ (same architecture).

Departures from LAS-AWP's code: inputs are not normalised outside the model (a model that wants
normalisation has a Normalize layer; the reference normalised the attack and training but not
the reward, §1.8), and there is no warm-up (the reference's is 0 epochs anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from learned_at.envs.attack_loss import AttackLoss
from learned_at.envs.options import setting, NON_NEGATIVE, POSITIVE, Limit
from learned_at.envs.result import AttackResult
from learned_at.targets.inputs import TargetInputs
from learned_at.targets.losses.base import ATLossOutput, register_at_loss
from learned_at.targets.losses.ce import CrossEntropy, CrossEntropyConfig
from learned_at.targets.shadow import Shadow

_EPS = 1e-20


@dataclass(frozen=True)
class AwpConfig(CrossEntropyConfig):
    """Cross-entropy AT with adversarial weight perturbation."""

    limits: ClassVar[dict[str, Limit]] = {**CrossEntropyConfig.limits, "gamma": NON_NEGATIVE,
                                            "proxy_lr": POSITIVE}

    name: str = setting("awp", "registry id.")
    gamma: float = setting(0.01, "relative size γ of the weight perturbation per layer.")
    proxy_lr: float = setting(0.01, "learning rate of the proxy's ascent step.")


def weight_perturbation(model: nn.Module, proxy: nn.Module, gamma: float
                        ) -> dict[str, torch.Tensor]:
    """Layer-wise relative perturbation v_l = γ‖w_l‖ Δ_l / ‖Δ_l‖ for multi-dim weights.

    Returns:
        {parameter name: v_l (same shape as the weight)}; biases and 1-d parameters are left out.
    """
    proxy_params = dict(proxy.named_parameters())
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, w in model.named_parameters():
            if w.dim() <= 1:
                continue
            delta = proxy_params[name] - w
            out[name] = gamma * w.norm() / (delta.norm() + _EPS) * delta
    return out


def add_to_weights(model: nn.Module, perturbation: dict[str, torch.Tensor], sign: float) -> None:
    """w_l += sign · v_l in place for every perturbed weight."""
    with torch.no_grad():
        for name, w in model.named_parameters():
            if name in perturbation:
                w.add_(perturbation[name], alpha=sign)


@register_at_loss(AwpConfig)
class Awp(CrossEntropy):
    """CE AT step at the adversarially perturbed weights w + v."""

    attack_loss: AttackLoss = AttackLoss.CE

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.proxy = Shadow()

    def perturbation(self, model: nn.Module, result: AttackResult, inputs: TargetInputs
                     ) -> dict[str, torch.Tensor]:
        """v for the current weights: one proxy ascent step on the AT loss."""
        proxy = self.proxy.load(model)
        proxy.train()
        optimizer = self.proxy.sgd(self.config.proxy_lr)
        loss = -self.compute(proxy, result, inputs).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return weight_perturbation(model, proxy, self.config.gamma)

    def train_step(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                   result: AttackResult, inputs: TargetInputs = TargetInputs()) -> ATLossOutput:
        """Perturb, take the optimiser step at w + v, remove v (model left in train mode).

        ``model`` may be a DistributedDataParallel wrapper: the proxy and v use the bare
        module (same parameter names), the step runs through the wrapper."""
        model.train()
        bare = getattr(model, "module", model)
        v = self.perturbation(bare, result, inputs)
        add_to_weights(bare, v, 1.0)
        out = self.compute(model, result, inputs)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        add_to_weights(bare, v, -1.0)
        return out
