"""FGSM-PGI's regulariser as an AT loss usable with any policy (``at_loss=pgi``).

    L = LS-CE(f(x + δ_adv), y) + λ · mean_{N×K} (f(x + δ_adv) − f(x_init))²

where ``x_init`` = x + δ₀ is the attack's starting point, which the runner passes as
``extras["x_init"]`` to AT losses that declare ``needs_start_point``: the prior for
``fgsm_pgi``, the generator's output for ``fgsm_sdi``, the random start for ``fgsm_rs`` (the poster's "FGSM-RS + regulariser"
ablation) and the clean input for attacks without a start. It is an MSE between *logits*
(docs/seeds.md §3.2-3.3), mean-reduced over N×K as in the reference code (λ = 10 there);
``reduction=sum`` sums over classes instead (the poster's ‖·‖²₂ per sample, averaged over the
batch: K times larger for the same λ).

Both forwards run in train mode (the reference's prior-point forward is the train-mode attack
forward whose graph it retains). ``prior_grad=true`` back-propagates through both branches,
as the reference; ``prior_grad=false`` treats f(x_init) as a constant (computed without a
graph: one forward instead of forward + backward; a departure offered for speed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from envs.attack_loss import AttackLoss
from targets.at_loss import ATLoss, ATLossConfig, ATLossOutput, register_at_loss, \
    soft_cross_entropy


@dataclass(frozen=True)
class PgiLossConfig(ATLossConfig):
    """CE AT plus FGSM-PGI's logit-pairing regulariser.

    Attributes:
        name: registry id.
        lam: regulariser weight λ (reference 10).
        reduction: ``mean`` over N×K (reference code) or ``sum`` over K, mean over N.
        prior_grad: back-propagate through the prior branch f(x_init) too (reference).
    """

    name: str = "pgi"
    lam: float = 10.0
    reduction: str = "mean"
    prior_grad: bool = True


@register_at_loss(PgiLossConfig)
class PgiLoss(ATLoss):
    """λ-weighted squared error between the logits at the example and at the starting point."""

    name: ClassVar[str] = "pgi"
    attack_loss: ClassVar[AttackLoss] = AttackLoss.CE
    needs_start_point: ClassVar[bool] = True

    def __init__(self, config: PgiLossConfig) -> None:
        super().__init__(config)
        if config.reduction not in ("mean", "sum"):
            raise ValueError(f"at_loss.reduction must be 'mean' or 'sum', "
                             f"got {config.reduction!r}")

    def compute(self, model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                extras: dict[str, torch.Tensor] | None = None) -> ATLossOutput:
        """Shapes: x, x_adv, extras["x_init"]: (N, C, H, W); y: (N,)."""
        x_init = (extras or {}).get("x_init")
        if x_init is None:
            raise ValueError("at_loss=pgi needs extras['x_init'] (the attack's starting point); "
                             "the co-training runner passes it, direct callers must too")
        with torch.set_grad_enabled(self.config.prior_grad and torch.is_grad_enabled()):
            z_init = model(x_init.detach())
        logits = model(x_adv)
        ce = soft_cross_entropy(logits, y, self.true_class_prob(extras))
        sq = (logits - z_init).pow(2)
        reg_per = sq.mean(1) if self.config.reduction == "mean" else sq.sum(1)  # (N,)
        per = ce + self.config.lam * reg_per
        loss = per.mean()
        parts = {"loss": loss.detach(), "ce": ce.mean().detach(),
                 "pgi_reg": reg_per.mean().detach()}
        return ATLossOutput(loss, parts, logits.detach(), per.detach())
