"""Adversarial-training losses of the target: cross-entropy AT (with label smoothing) and TRADES.

An AT loss takes the clean batch and the adversarial batch and returns the loss and its parts;
:meth:`ATLoss.train_step` turns it into one optimiser step (AT losses that perturb weights, such
as AWP, override it). Registry ids select them (``at_loss=ce``, ``at_loss=trades``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from envs.attack_loss import AttackLoss, kl_loss


def smoothed_targets(y: torch.Tensor, num_classes: int, true_class_prob: float) -> torch.Tensor:
    """Soft labels: ``true_class_prob`` on y, the rest spread evenly. (N,) -> (N, K).

    This is the reference repos' label smoothing (docs/seeds.md §0.2: LAS-AT 0.7, FGSM-SDI 0.5,
    FGSM-PGI 0.6); 1.0 gives one-hot targets.
    """
    off = (1.0 - true_class_prob) / max(num_classes - 1, 1)
    t = torch.full((y.shape[0], num_classes), off, device=y.device)
    return t.scatter_(1, y[:, None], true_class_prob)


def soft_cross_entropy(logits: torch.Tensor, y: torch.Tensor, true_class_prob: float = 1.0
                       ) -> torch.Tensor:
    """Per-sample −Σ t·log softmax(z) with smoothed targets t. (N, K), (N,) -> (N,)."""
    if true_class_prob == 1.0:
        return F.cross_entropy(logits, y, reduction="none")
    t = smoothed_targets(y, logits.shape[1], true_class_prob)
    return -(t * F.log_softmax(logits, 1)).sum(1)


@dataclass
class ATLossOutput:
    """Result of an AT loss.

    Attributes:
        loss: 0-dim tensor with graph (what the optimiser minimises).
        parts: named detached 0-dim tensors (logged as ``train/<name>``).
        logits_adv: (N, K) detached logits on the adversarial batch.
        per_sample: (N,) detached per-sample loss (for rewards that need it).
    """

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    logits_adv: torch.Tensor
    per_sample: torch.Tensor


@dataclass(frozen=True)
class ATLossConfig:
    """Cross-entropy AT: minimise CE(f(x_adv), y).

    Attributes:
        name: registry id.
        true_class_prob: label smoothing as the probability put on the true class (1.0 = off).
    """

    name: str = "ce"
    true_class_prob: float = 1.0


class ATLoss:
    """Base AT loss (cross-entropy on the adversarial batch).

    ``extras["weight"]`` (N,), when a policy provides it, weights each sample's CE:
    loss = mean(w·CE) (Dynamic AT's reference-code re-weighting, see agents/dynamic.py).
    """

    name: ClassVar[str] = "ce"
    attack_loss: ClassVar[AttackLoss] = AttackLoss.CE
    #: the loss reads ``extras["x_init"]`` (the attack's starting point); the runner builds it
    #: only for losses that set this.
    needs_start_point: ClassVar[bool] = False

    def __init__(self, config: Any) -> None:
        self.config = config

    def true_class_prob(self, extras: dict[str, torch.Tensor] | None) -> float:
        """Label smoothing: a policy's preset (``extras["true_class_prob"]``, a 0-dim CPU
        tensor, e.g. FGSM-SDI 0.5, FGSM-PGI 0.6) wins over ``config.true_class_prob``."""
        preset = (extras or {}).get("true_class_prob")
        return self.config.true_class_prob if preset is None else float(preset)

    def compute(self, model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                extras: dict[str, torch.Tensor] | None = None) -> ATLossOutput:
        """Loss of ``model`` (in its current mode) on the batch. Shapes (N, C, H, W), (N,)."""
        logits = model(x_adv)
        per = soft_cross_entropy(logits, y, self.true_class_prob(extras))
        weight = (extras or {}).get("weight")  # (N,) optional per-sample weights (Dynamic AT)
        loss = per.mean() if weight is None else (per * weight.to(per.dtype)).mean()
        return ATLossOutput(loss, {"loss": loss.detach()}, logits.detach(), per.detach())

    def train_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                   x_adv: torch.Tensor, y: torch.Tensor,
                   extras: dict[str, torch.Tensor] | None = None) -> ATLossOutput:
        """One optimiser step on the loss (model in train mode)."""
        model.train()
        out = self.compute(model, x, x_adv, y, extras)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        return out

    def state_dict(self) -> dict[str, Any]:
        """Extra state to checkpoint (e.g. AWP's proxy optimiser)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


@dataclass(frozen=True)
class TradesConfig(ATLossConfig):
    """TRADES (Zhang et al. 2019): CE(f(x), y) + β·KL(f(x) ‖ f(x_adv)), attack maximises the KL.

    Attributes:
        beta: trade-off β; a policy may override it per sample via ``extras["beta"]`` (N,).
    """

    name: str = "trades"
    beta: float = 6.0


class Trades(ATLoss):
    """TRADES with an optional per-sample β (LAS-TRADES picks β per sample)."""

    name: ClassVar[str] = "trades"
    attack_loss: ClassVar[AttackLoss] = AttackLoss.KL

    def compute(self, model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                extras: dict[str, torch.Tensor] | None = None) -> ATLossOutput:
        n = x.shape[0]
        logits = model(torch.cat([x, x_adv]))
        clean, adv = logits[:n], logits[n:]
        ce = soft_cross_entropy(clean, y, self.true_class_prob(extras))
        kl = kl_loss(adv, clean)
        beta = (extras or {}).get("beta")
        beta = self.config.beta if beta is None else beta.to(kl.dtype)
        per = ce + beta * kl
        loss = per.mean()
        parts = {"loss": loss.detach(), "clean_ce": ce.mean().detach(), "kl": kl.mean().detach()}
        return ATLossOutput(loss, parts, adv.detach(), per.detach())


_AT_LOSSES: dict[str, tuple[type, type[ATLoss]]] = {}


def register_at_loss(config_cls: type) -> Callable[[type[ATLoss]], type[ATLoss]]:
    """Class decorator registering an AT loss under ``config_cls().name``."""

    def wrap(cls: type[ATLoss]) -> type[ATLoss]:
        key = config_cls().name
        cls.name = key
        _AT_LOSSES[key] = (config_cls, cls)
        return cls

    return wrap


register_at_loss(ATLossConfig)(ATLoss)
register_at_loss(TradesConfig)(Trades)


def at_loss_registry() -> dict[str, tuple[type, type[ATLoss]]]:
    """All AT losses: id -> (config class, loss class). Imports the optional ones."""
    import targets.at_loss_catalog  # noqa: F401

    return dict(_AT_LOSSES)


def make_at_loss(config: Any) -> ATLoss:
    """Build the AT loss named by ``config.name``; unknown ids list the valid ones."""
    registry = at_loss_registry()
    if config.name not in registry:
        raise ValueError(f"unknown at_loss {config.name!r}; valid: {', '.join(sorted(registry))}")
    return registry[config.name][1](config)
