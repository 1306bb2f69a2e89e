"""AWP (Wu et al., NeurIPS 2020): adversarial weight perturbation on top of cross-entropy AT.

One step, as in LAS-AWP's ``utils_awp.AdvWeightPerturb`` (docs/seeds.md §1.7):

1. a proxy copy of the model takes one SGD step (lr ``proxy_lr``) *ascending* the AT loss on
   the adversarial batch;
2. per weight tensor (parameters with more than one dimension: conv and linear weights, not
   biases or BatchNorm), the change is rescaled relative to the weight:
   v_l = γ · ‖w_l‖ / (‖Δ_l‖ + 1e-20) · Δ_l, with Δ_l = w_proxy,l − w_l;
3. the model's step is taken at w + v (the gradient of the AT loss there), then v is removed.

``at_loss=awp`` works with any policy (``policy=pgd_at at_loss=awp`` is plain AWP-AT;
``policy=las_at at_loss=awp`` is LAS-AWP). The proxy module and its optimiser are allocated once
(at the first step) and reloaded from the model at every step, so the same instance serves the
target and LAS-AT's look-ahead shadow (same architecture).

Departures from LAS-AWP's code: inputs are not normalised outside the model (a model that wants
normalisation has a Normalize layer; the reference normalised the attack and training but not
the reward, §1.8), and there is no warm-up (the reference's is 0 epochs anyway).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from envs.attack_loss import AttackLoss
from targets.at_loss import ATLoss, ATLossConfig, ATLossOutput, register_at_loss

_EPS = 1e-20


@dataclass(frozen=True)
class AwpConfig(ATLossConfig):
    """Cross-entropy AT with adversarial weight perturbation.

    Attributes:
        name: registry id.
        true_class_prob: label smoothing (1.0 = off; LAS-AWP uses plain CE).
        gamma: relative size γ of the weight perturbation per layer.
        proxy_lr: learning rate of the proxy's ascent step.
    """

    name: str = "awp"
    gamma: float = 0.01
    proxy_lr: float = 0.01


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
class Awp(ATLoss):
    """CE AT step at the adversarially perturbed weights w + v."""

    name: ClassVar[str] = "awp"
    attack_loss: ClassVar[AttackLoss] = AttackLoss.CE

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.proxy: nn.Module | None = None
        self.proxy_optimizer: torch.optim.SGD | None = None

    def _load_proxy(self, model: nn.Module) -> nn.Module:
        if self.proxy is None:
            self.proxy = copy.deepcopy(model)
            self.proxy_optimizer = torch.optim.SGD(self.proxy.parameters(),
                                                   lr=self.config.proxy_lr)
        else:
            self.proxy.load_state_dict(model.state_dict())
        return self.proxy

    def perturbation(self, model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor,
                     y: torch.Tensor, extras: dict[str, torch.Tensor] | None = None
                     ) -> dict[str, torch.Tensor]:
        """v for the current weights: one proxy ascent step on the AT loss. Shapes (N, ...)."""
        proxy = self._load_proxy(model)
        proxy.train()
        assert self.proxy_optimizer is not None
        loss = -self.compute(proxy, x, x_adv, y, extras).loss
        self.proxy_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.proxy_optimizer.step()
        return weight_perturbation(model, proxy, self.config.gamma)

    def train_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                   x_adv: torch.Tensor, y: torch.Tensor,
                   extras: dict[str, torch.Tensor] | None = None) -> ATLossOutput:
        """Perturb, take the optimiser step at w + v, remove v (model left in train mode)."""
        model.train()
        v = self.perturbation(model, x, x_adv, y, extras)
        add_to_weights(model, v, 1.0)
        out = self.compute(model, x, x_adv, y, extras)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        add_to_weights(model, v, -1.0)
        return out
