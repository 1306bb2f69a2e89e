"""FGSM-PGI (Jia et al., ECCV 2022): prior-guided initialisation of a single FGSM step.

Each sample's FGSM starts from a prior perturbation instead of a random point:

* ``bp``  — the previous *batch's* adversarial perturbation (different images), row by row;
* ``ep``  — this sample's adversarial perturbation from the previous epoch;
* ``mep`` — a prior built with momentum over all previous epochs (poster, Alg. 3)::

      g_c     = sign(∇ₓ L(f(x + η_E), y))        # the gradient the FGSM step takes anyway
      g_{E+1} = μ·g_E + g_c                      # per-sample momentum (μ = 0.3)
      δ_adv   = Π[η_E + α·g_c]                   # the training example (taken by the env)
      η_{E+1} = Π[η_E + α·sign(g_{E+1})]         # the stored prior

The PGI regulariser (λ·MSE between the logits at x + δ_adv and at the prior point) is the
target step's ``at_loss=pgi`` (targets/losses/pgi.py), which ``policy=fgsm_pgi`` selects by
default (:attr:`agents.base.PolicyConfig.default_at_loss`): the method is the prior *and* its
regulariser; ``at_loss=ce`` on the command line gives the prior alone (an ablation).

Choices and departures from the reference code (docs/references.md §3.3), each deliberate:
    * Alignment (the reference's bug): priors and momenta are stored in un-augmented
      coordinates and cropped/flipped with their image (agents/prior_memory.py).
    * ``momentum_form=sign`` (default) is the poster's g_c = sign(∇); ``l1`` reproduces the
      code's g_c = ∇ / ‖∇‖₁, the L1 norm taken over the whole batch tensor (a scalar).
    * ``init=uniform`` (default) starts epoch 1 (and each reset) from U(−ε, ε) (poster);
      ``corners`` reproduces the code's ε·sign(U) start (L∞ only).
    * The prior is reset every ``reset_every`` epochs (reference code: 40 on CIFAR-10; the
      poster shows no reset); 0 never resets.
    * The attack gradient is the env's attack loss (CE, per-sample), not the label-smoothed
      CE of the reference; sign and the scalar L1 norm make the two identical in direction
      up to the smoothing.
    * BatchNorm: the attack gradient at x + η is taken with the target in the env's BatchNorm
      mode (``bn_mode``, eval by default: running statistics untouched, per-sample forward).
      The reference takes it in *train* mode — its forward f(x + η) is also the regulariser's
      prior branch and updates the running statistics with prior-point batches. ``bn_mode=train``
      attacks through batch statistics as the reference; the PGI regulariser's prior branch
      (``at_loss=pgi``) is a train-mode forward of the target's step either way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, ClassVar

import torch

from learned_at.agents.base import (Policy, PolicyConfig, PolicyContext, PresetContext,
                                   StepInfo, register_policy)
from learned_at.agents.fixed import uniform_action
from learned_at.agents.init_stats import describe_init
from learned_at.agents.prior_memory import MemoryDtype, PriorMemory
from learned_at.envs.attack_env import AttackAction, Obs
from learned_at.envs.options import setting, NON_NEGATIVE, NON_NEGATIVE_INT, PROBABILITY, Limit, parse_option
from learned_at.envs.requirements import EnvRequirements, Extra
from learned_at.envs.result import AttackResult
from learned_at.targets.distributed import all_gather_cat
from learned_at.targets.losses.base import ATLossOutput
from learned_at.targets.target import TargetView


class Prior(str, Enum):
    """Where each sample's start comes from."""

    bp = "bp"    # the previous batch's perturbation
    ep = "ep"    # this sample's perturbation of the previous epoch
    mep = "mep"  # a momentum prior over all previous epochs (the reference code's variant)


class MomentumForm(str, Enum):
    """What the ``mep`` momentum accumulates."""

    sign = "sign"  # sign(∇) (poster)
    l1 = "l1"      # ∇ / ‖∇‖₁ of the whole batch (reference code)


class InitKind(str, Enum):
    """Start of a fresh prior."""

    uniform = "uniform"  # U(−ε, ε) in the geometry (poster)
    corners = "corners"  # ε·sign(U) (reference code; L∞ only)


@dataclass(frozen=True)
class FgsmPgiConfig(PolicyConfig):
    """FGSM-PGI: prior-guided initialisation."""

    limits: ClassVar[dict[str, Limit]] = {
        "alpha_ratio": NON_NEGATIVE, "momentum": NON_NEGATIVE, "reset_every": NON_NEGATIVE_INT,
        "true_class_prob": PROBABILITY}

    name: str = setting("fgsm_pgi", "registry id.")
    prior: Prior = setting(Prior.mep, "bp (previous batch), ep (previous epoch) or mep (momentum "
                                      "over epochs; the reference code's only variant).")
    alpha_ratio: float = setting(1.0, "FGSM step α (and prior step) as a multiple of ε "
                                      "(reference: α = ε).")
    momentum: float = setting(0.3, "μ of mep (reference 0.3).")
    momentum_form: MomentumForm = setting(MomentumForm.sign, "sign (poster: accumulate sign(∇)) "
                                                             "or l1 (reference code: accumulate ∇ "
                                                             "/ ‖∇‖₁ of the whole batch).")
    reset_every: int = setting(40, "re-draw the priors (and zero the momenta) every this many "
                                   "epochs (reference code: 40 for CIFAR-10); 0 = only at the "
                                   "start.")
    init: InitKind = setting(InitKind.uniform, "start of a fresh prior: uniform (U(−ε, ε), "
                                               "poster) or corners (ε·sign(U), reference code; L∞ "
                                               "only).")
    true_class_prob: float | None = setting(None, "label smoothing of the target's AT loss (one "
                                                  "setting with at_loss.true_class_prob: set "
                                                  "either); None = the reference recipe's 0.6 "
                                                  "(docs/references.md §0.2); 1.0 turns smoothing "
                                                  "off.")
    memory_dtype: MemoryDtype = setting(MemoryDtype.float32, "storage of the per-sample memories "
                                                             "(float32, float16, bfloat16); "
                                                             "CIFAR-10 needs 614 MB per memory in "
                                                             "float32.")
    target_smoothing: ClassVar[bool] = True
    default_at_loss: ClassVar[str | None] = "pgi"  # the method is the prior *and* its regulariser

    def resolve(self, preset: PresetContext) -> FgsmPgiConfig:
        """``true_class_prob``: the reference recipe's 0.6 when it is None."""
        return self if self.true_class_prob is not None else replace(self, true_class_prob=0.6)


@register_policy(FgsmPgiConfig)
class FgsmPgi(Policy):
    """One FGSM step from a per-sample prior carried across batches (bp) or epochs (ep, mep)."""

    env_requirements = EnvRequirements(extras=frozenset({Extra.first_grad}))
    seen: torch.Tensor  # buffer (ep, mep): (num_train,) bool, the sample holds a prior

    def __init__(self, config: FgsmPgiConfig, context: PolicyContext) -> None:
        super().__init__(config, context)
        config = self.config  # resolved: its presets filled
        self.prior = parse_option(Prior, config.prior, "policy.prior")
        self.form = parse_option(MomentumForm, config.momentum_form, "policy.momentum_form")
        self.init_kind = parse_option(InitKind, config.init, "policy.init")
        if self.init_kind is InitKind.corners and not context.geometry.has_corner_init:
            raise ValueError(f"policy.init=corners is not defined for threat="
                             f"{context.geometry.name}; use policy.init=uniform")
        shape, dev = context.image_shape, context.device
        if self.prior is not Prior.bp:
            self.delta_memory = PriorMemory(context.num_train, shape, dev, config.memory_dtype)
            self.register_buffer("seen", torch.zeros(context.num_train, dtype=torch.bool,
                                                     device=dev))
        if self.prior is Prior.mep:
            self.momentum_memory = PriorMemory(context.num_train, shape, dev,
                                               config.memory_dtype)
        self.previous: torch.Tensor | None = None  # bp: last batch's δ_adv (B, C, H, W)

    # -- epochs ---------------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        """Forget every prior at epoch 0 and every ``reset_every`` epochs."""
        super().begin_epoch(epoch)
        every = self.config.reset_every
        if epoch == 0 or (every and epoch % every == 0):
            self.reset_priors()

    def reset_priors(self) -> None:
        """Fresh start: no sample has a prior (the next attack draws ``init``), momenta 0."""
        self.previous = None
        if self.prior is not Prior.bp:
            self.seen.zero_()
        if self.prior is Prior.mep:
            self.momentum_memory.reset()

    # -- acting ---------------------------------------------------------------------------
    def _fresh(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        geometry, eps = self.context.geometry, self.context.eps
        if self.init_kind is InitKind.corners:
            return geometry.corner_init(x, eps, generator)
        return geometry.random_delta(x, eps, generator)

    def act(self, obs: Obs, t: int, generator: torch.Generator | None) -> AttackAction | None:
        if t:
            return None
        x = obs["x"]
        fresh = self._fresh(x, generator)
        if self.prior is Prior.bp:
            prev = self.previous
            eta = prev if prev is not None and prev.shape == x.shape else fresh
        else:
            idx = obs["index"]
            stored = self.delta_memory.read(idx, obs.get("offsets"), obs.get("flipped"))
            eta = torch.where(self.seen[idx].view(-1, 1, 1, 1), stored, fresh)
        eps = self.context.eps
        alpha = self.context.geometry.step_size(eps, self.config.alpha_ratio)
        return uniform_action(obs, eps, alpha, 1, eta)

    # -- learning the priors -------------------------------------------------------------
    def momentum_step(self, momentum: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """g_{E+1} = μ·g_E + g_c with g_c = sign(∇) (poster) or ∇/‖∇‖₁ (code). (B, C, H, W)."""
        if self.form is MomentumForm.sign:
            g_c = grad.sign()
        else:
            g_c = grad / grad.abs().sum().clamp_min(1e-12)  # whole-batch L1 norm, as the code
        return self.config.momentum * momentum + g_c

    def update(self, result: AttackResult, view: TargetView, out: ATLossOutput,
               info: StepInfo) -> dict[str, torch.Tensor]:
        """Store this batch's priors for the next batch (bp) or the next epoch (ep, mep)."""
        delta_adv = result.delta.detach()
        if self.prior is Prior.bp:
            self.previous = delta_adv.clone()
            return {}
        offsets, flipped = result.augmentation
        idx = result.index
        if self.prior is Prior.ep:
            prior = delta_adv
        else:
            grad = result.first_grad
            if grad is None:
                raise ValueError("fgsm_pgi (mep) needs the env extra 'first_grad': build the "
                                 "env with the policy's requirements()")
            momentum = self.momentum_step(
                self.momentum_memory.read(idx, offsets, flipped), grad)
            alpha = self.context.geometry.step_size(self.context.eps, self.config.alpha_ratio)
            geometry = self.context.geometry
            prior = geometry.project(geometry.step(result.delta0, momentum, alpha), result.x,
                                     self.context.eps)
            self.momentum_memory.write(idx, momentum, offsets, flipped)
        self.delta_memory.write(idx, prior, offsets, flipped)
        self.seen[all_gather_cat(idx)] = True  # every rank's samples (as the memory's rows)
        return {}

    # -- reporting and state -------------------------------------------------------------
    def describe(self, result: AttackResult) -> dict[str, torch.Tensor]:
        return describe_init(result, self.context.geometry)

    def epoch_metrics(self) -> dict[str, float | torch.Tensor]:
        """``policy/prior_coverage``: fraction of training samples holding a prior."""
        if self.prior is Prior.bp:
            return {}
        return {"policy/prior_coverage": self.seen.float().mean()}

    def extra_state(self) -> dict[str, Any]:
        return {"previous": self.previous}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if state:
            self.previous = state.get("previous")
