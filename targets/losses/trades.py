"""TRADES (Zhang et al. 2019): CE(f(x), y) + β·KL(f(x) ‖ f(x_adv)); the attack maximises the KL.

Per sample i (the reference's ``KLDivLoss(sum)/B`` is the batch mean of these)::

    ℓ_i = CE(f(x_i), y_i) + β_i · Σ_k p_k(x_i) · (log p_k(x_i) − log p_k(x_adv,i)),
    p = softmax(f(·)),   loss = mean_i w_i·ℓ_i   (w_i = 1 unless a policy re-weights)

Gradients flow through both the clean and the adversarial branch, as in the reference.

sTRADES (Zhong et al., L0): the same loss with β = 3 and a CE attack (the reference's sPGD
ascends the CE, not the KL; docs/references.md §6.3). Both come from the geometry
(:attr:`envs.geometry.base.Geometry.at_loss_defaults`) when ``at_loss.beta`` / ``at_loss.attack``
are left unset, so ``threat=l0 at_loss=trades`` is sTRADES and ``threat=linf at_loss=trades`` is
TRADES (β = 6, KL attack). With soft labels (Fast-LS-ℓ0) the clean CE term uses the SAT targets
and weights; the KL term is unchanged.

Which sTRADES: the Fast-LS-ℓ0 paper's Table 3 has two, sTRADES (T) and (F) (1-step: 31.0 vs
55.4 sAA; with SAT and N-FGSM 63.0 vs 62.6), and its Fast-LS-ℓ0 is the (T) column; the
material read does not say what (T) and (F) denote (docs/references.md §6.5). What this
loss offers is the one axis the two sTRADES forms in circulation differ on, the attack's
objective: ``at_loss.attack=ce`` (the default under ``threat=l0``) is the sTRADES of the
sPGD reference code (sPGD@6624853 ``adversarial_training/trainer.py``: the TRADES loss on
the example of its CE-ascending sPGD); ``at_loss.attack=kl`` is TRADES' own inner
maximisation of the KL term. Neither is claimed to be the paper's (T).

Reference behaviour kept (docs/references.md §8):

* **Separate forward passes** for the clean and the adversarial batch (default), so
  BatchNorm's batch statistics are never a mix of the two. ``joint_pass=true`` forwards
  ``cat[x, x_adv]`` in one pass instead (one larger batch: faster on a GPU, but the train-mode
  statistics are those of the mixed batch — a departure from TRADES).
* **The KL attack starts at x + 0.001·N(0, 1)** when the policy gives no start (``fgsm_at``,
  ``pgd_at``/``curriculum`` with ``random_start=false``): at δ = 0 the KL and its gradient are
  zero up to round-off (max |g| ≈ 3e-9 measured), and ``sign()`` would turn that round-off
  into a full step in an arbitrary direction. The loss asks the env for it
  (:attr:`envs.requirements.EnvRequirements.start_noise`); the env draws it with the episode's
  generator. A policy that gives its own start (random, learned, a prior) keeps it; a CE
  attack (sTRADES) needs no such start and gets none.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import torch
from torch import nn

from learned_at.envs.attack_loss import AttackLoss, kl_loss
from learned_at.envs.options import setting, NON_NEGATIVE, Limit, parse_option
from learned_at.envs.requirements import EnvRequirements
from learned_at.envs.result import AttackResult
from learned_at.targets.inputs import TargetInputs
from learned_at.targets.losses.base import (ATLoss, ATLossConfig, ATLossOutput, LossContext,
                                            register_at_loss, soft_cross_entropy, weighted_mean)
from learned_at.targets.losses.soft_labels import soft_target_ce

#: standard deviation of the reference's Gaussian start of the KL attack.
TRADES_START_NOISE = 0.001

DEFAULT_BETA = 6.0
"""TRADES' β where the geometry sets none (Zhang et al.; LAS-TRADES)."""


class TradesAttack(str, Enum):
    """The objective the attack ascends for TRADES."""

    kl = "kl"  # KL(f(x) ‖ f(x_adv)) (TRADES)
    ce = "ce"  # CE(f(x_adv), y) (sTRADES' sPGD)


@dataclass(frozen=True)
class TradesConfig(ATLossConfig):
    """TRADES."""

    limits: ClassVar[dict[str, Limit]] = {**ATLossConfig.limits, "beta": NON_NEGATIVE}

    name: str = setting("trades", "registry id.")
    beta: float | None = setting(None, "trade-off β; None = the geometry's default (L0 3, else "
                                       "6); a policy may override it per sample "
                                       "(TargetInputs.beta).")
    attack: TradesAttack | None = setting(None, "what the attack maximises: kl or ce; None = the "
                                                "geometry's default (L0 ce, else kl).")
    joint_pass: bool = setting(False, "forward clean and adversarial inputs as one concatenated "
                                      "batch (faster on GPUs; BatchNorm then mixes their "
                                      "statistics). Default: two passes (reference).")

    fallbacks: ClassVar[dict[str, Any]] = {"beta": DEFAULT_BETA, "attack": TradesAttack.kl}

    def __post_init__(self) -> None:
        if self.attack is not None:
            object.__setattr__(self, "attack", parse_option(TradesAttack, self.attack,
                                                            "at_loss.attack"))


@register_at_loss(TradesConfig)
class Trades(ATLoss):
    """TRADES with an optional per-sample β (LAS-TRADES picks β per sample)."""

    attack_loss: AttackLoss = AttackLoss.KL
    env_requirements: EnvRequirements = EnvRequirements(
        start_noise=TRADES_START_NOISE)
    supports_soft_labels: ClassVar[bool] = True

    def bind(self, context: LossContext) -> None:
        super().bind(context)
        attack = TradesAttack(self.config.attack or TradesAttack.kl)
        kl = attack is TradesAttack.kl
        self.attack_loss = AttackLoss.KL if kl else AttackLoss.CE
        self.env_requirements = EnvRequirements(start_noise=TRADES_START_NOISE if kl else 0.0)

    @property
    def beta(self) -> float:
        """The configured β (resolved: the geometry's, else 6, when it was None)."""
        return float(DEFAULT_BETA if self.config.beta is None else self.config.beta)

    def logits(self, model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(clean, adversarial) logits, (N, K) each: two passes, or one with ``joint_pass``."""
        if not self.config.joint_pass:
            return model(x), model(x_adv)
        both = model(torch.cat([x, x_adv]))
        return both[:x.shape[0]], both[x.shape[0]:]

    def compute(self, model: nn.Module, result: AttackResult, inputs: TargetInputs
                ) -> ATLossOutput:
        """ℓ_i = CE(f(x_i), y_i) + β_i·KL(p(x_i) ‖ p(x_adv,i)); loss = weighted batch mean."""
        clean, adv = self.logits(model, result.x, result.x_adv)
        soft = self.soft_targets(model, result, clean, adv)
        if soft is None:
            ce = soft_cross_entropy(clean, result.y, self.true_class_prob)
        else:
            ce = soft_target_ce(clean, soft[0]) * soft[1]
        kl = kl_loss(adv, clean)
        beta = self.beta if inputs.beta is None else inputs.beta.to(kl.dtype)
        per = ce + beta * kl
        loss = weighted_mean(per, inputs.weight)
        parts = {"loss": loss.detach(), "clean_ce": ce.mean().detach(), "kl": kl.mean().detach()}
        return ATLossOutput(loss, parts, adv.detach(), per.detach())
