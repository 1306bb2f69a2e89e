"""Fast-BAT (Zhang et al., ICML 2022): fast AT as a bi-level problem, with the implicit gradient.

``at_loss=fast_bat``. The attacker minimises ℓ_atk = −CE; its lower level is linearised at a
point z with a proximal term, which has a closed form (one *raw*-gradient step, projected)::

    δ*(θ) = argmin_{δ ∈ ball ∩ box} ⟨∇δ ℓ_atk(θ, z), δ − z⟩ + (λ/2)‖δ − z‖²
          = Π(z − (1/λ)·∇δ ℓ_atk(θ, z)) = Π(z + γ·∇δ CE(θ, z))          (γ = 1/λ here)

The target descends the total derivative of ℓ_tr(θ, δ*(θ)) (ℓ_tr = mean CE)::

    ∇θ ℓ_tr(θ, δ*) + (dδ*/dθ)ᵀ ∇δ ℓ_tr(θ, δ*),   dδ*/dθ = −(1/λ)·H·∇²δθ ℓ_atk(θ, ·)

where H = diag(1 where no bound of the ball ∩ box is active at δ*) comes from the KKT
conditions and ∇²δδ ℓ_atk is taken as 0, so the inverse Hessian is (1/λ)·I ("Hessian-free").
**Sign convention:** with ℓ_atk = −CE the two minus signs cancel, so the *implicit term* is ::

    + (1/λ) · ∇θ ⟨∇δ CE_sum(θ, p), H ⊙ ∇δ ℓ_tr(θ, δ*)⟩        (second factor held fixed)

computed by double back-propagation through the graph of ∇δ CE (no Hessian is formed). A flipped
sign turns the term into an ascent direction; the finite-difference test catches it.

Per batch (reference code ``trainer.py``, ``fast_bat`` branch; docs/references.md §5.3, §8):

1. z = Π(δ₀ + γ·∇δ CE(θ, δ₀)) from the episode's uniform start δ₀ and its first gradient
   (``AttackResult.delta0``, ``first_grad``: no extra pass; see ``z_from`` for other policies);
2. g = ∇δ CE_sum(θ, z), kept with its graph to θ when the implicit derivative is taken at z;
3. δ* = Π(z + γ·g) and H = ``geometry.inactive_mask(δ*)`` (tolerance 1e-7, the reference's);
4. one train-mode forward at δ*: one backward gives ∇θ ℓ_tr and v = ∇δ ℓ_tr;
5. a second backward gives the implicit term (1/λ)·∇θ Σ⟨g, H ⊙ v⟩; both are summed into
   ``.grad`` and the optimiser steps.

Design choices and departures (each a config field where a user may want the other):

* **The lower level is the loss's own computation**, not a policy: its steps are raw-gradient
  steps (a geometry's ascent is a sign step under L∞) and only the loss can keep the graph of
  g to θ. The episode supplies the start point, the first gradient, ε and the geometry, so the
  natural policy is ``fgsm_rs`` (the reference's uniform start; its sign step's example is not
  used). **Where z comes from** (``z_from``): ``auto`` (default) decides per sample, without a
  host sync — the reference's raw step from the start where the episode made exactly one step
  (single-step policies: ``fgsm_rs``, ``fgsm_at``, ``fgsm_sdi``, ``fgsm_pgi``), the episode's
  own example where it made more (a multi-step or learned policy's attack is the linearisation
  point: ``pgd_at``, ``curriculum``, ``dynamic``, ``las_at``, ``ppo_strategy``), the start where
  it made none (``none``: z = the clean point); ``raw_step`` forces the reference's z and then
  refuses policies that are not single-step (:func:`policy_problem`, via
  :meth:`FastBat.check_setting`); ``episode`` always takes the episode's example.
* **Where the implicit derivative is taken** (``ig_point``): ``z`` as in the reference code (the
  exact derivative of step 3 with z held fixed) or ``delta_star`` as in the paper's derivation
  (the mixed derivative at δ*, from one more lower-level pass there; the pass at z then needs
  no graph).
* **λ and γ are decoupled as in the reference**: λ = 10 weights the implicit term, while the
  step is γ = 5000/255 for ε ≤ 8/255 and 2000/255 above (``step=null``). The term is then
  1/(λγ) times the exact derivative of the code's δ*. ``lam=null`` couples them (λ = 1/γ, the
  reference's ``--lmbda 0``): the implicit term is then the exact derivative of δ*.
* ``linearisation=sign`` (δ* = Π(z + γ·sign g)) is the paper's pitfall: d sign/dθ = 0, so the
  implicit term vanishes and Fast-BAT collapses into FGSM-AT. It is kept for that ablation and
  warns when built.
* ``mask=ones`` drops H (constraints ignored in the implicit term; an ablation).
* The raw step γ acts on input gradients, whose scale depends on the model: the reference's
  models normalise inputs inside (CIFAR mean/std, gradients ×1/std ≈ ×4), the project's models
  take raw [0, 1] inputs unless they hold a :class:`~targets.models.Normalize` layer. With
  γ = 5000/255 most coordinates still end at a bound either way; ``h_active_fraction`` shows
  how many do.
* BatchNorm: the lower level runs in eval mode by default, like every attack of the project —
  the episode's pass at δ₀ (the env's ``bn_mode=eval``) and the loss's pass at z
  (``lower_bn=eval``): its double back-propagation is then ~15% cheaper and the implicit term
  does not couple the samples through batch statistics. The reference runs every forward in
  train mode: ``bn_mode=train at_loss.lower_bn=train`` reproduces it. The upper level's forward
  at δ* is a training forward (train mode). The reference's two forwards at δ* (one for v, one
  for the training loss) are one here (same output in train mode), and its extra clean
  eval-mode forward (logging only) is not made.

Logged per batch (epoch means as ``train/<name>``): ``loss`` (ℓ_tr at δ*), ``implicit_norm``
(‖implicit term‖₂ over all parameters), ``upper_grad_norm`` (‖∇θ ℓ_tr‖₂) and
``h_active_fraction`` (the fraction of δ*'s coordinates at a bound, i.e. where H = 0).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from learned_at.envs.attack_env import target_mode
from learned_at.envs.attack_loss import AttackLoss
from learned_at.envs.geometry.base import Geometry, per_sample
from learned_at.envs.options import setting, NON_NEGATIVE, POSITIVE, Limit, parse_option
from learned_at.envs.requirements import BnMode, EnvRequirements, Extra
from learned_at.envs.result import AttackResult
from learned_at.targets.distributed import average_gradients
from learned_at.targets.inputs import TargetInputs
from learned_at.targets.losses.base import (ATLoss, ATLossConfig, ATLossOutput, register_at_loss,
                                            soft_cross_entropy)


class Linearisation(str, Enum):
    """The lower level's step direction."""

    raw = "raw"    # γ·∇δ CE (the method)
    sign = "sign"  # γ·sign ∇δ CE: the implicit term vanishes (the paper's pitfall; warns)


class IgPoint(str, Enum):
    """Where the mixed derivative ∇²δθ of the implicit term is evaluated."""

    z = "z"                    # the linearisation point (reference code; exact for step 3)
    delta_star = "delta_star"  # the lower-level solution δ* (the paper's derivation)


class ZFrom(str, Enum):
    """Where the linearisation point z comes from."""

    auto = "auto"          # per sample: raw_step after a one-step episode, else the episode's
    raw_step = "raw_step"  # Π(δ₀ + γ·first gradient): the episode's start + one raw step (ref.)
    episode = "episode"    # the episode's final perturbation (a policy's example)


class HMask(str, Enum):
    """The mask H of the implicit term."""

    inactive = "inactive"  # 1 where no bound is active at δ* (KKT; reference)
    ones = "ones"          # constraints ignored (ablation)


#: the reference's raw-gradient step (train.py): 5000/255 up to ε = 8/255, 2000/255 above.
REFERENCE_STEP_LIMIT, REFERENCE_STEP_SMALL_EPS, REFERENCE_STEP_LARGE_EPS = (
    8 / 255, 5000 / 255, 2000 / 255)

#: built-in policies that take several attack steps per sample (their later steps are unused
#: with ``z_from=raw_step``); ``pgd_at`` counts when ``policy.steps`` > 1.
MULTI_STEP_POLICIES = ("curriculum", "dynamic", "las_at", "ppo_strategy")


def reference_step(eps: torch.Tensor) -> torch.Tensor:
    """The reference's γ per sample: 5000/255 where ε ≤ 8/255, else 2000/255. (N,) -> (N,)."""
    small = eps <= REFERENCE_STEP_LIMIT * (1 + 1e-6)
    return torch.where(small, torch.full_like(eps, REFERENCE_STEP_SMALL_EPS),
                       torch.full_like(eps, REFERENCE_STEP_LARGE_EPS))


def attack_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor,
                    create_graph: bool = False) -> torch.Tensor:
    """∇δ Σᵢ CE(f(xᵢ + δᵢ), yᵢ): the per-sample gradient of the attack objective at δ.

    With ``create_graph`` the result keeps its dependence on the model's parameters (for the
    implicit term's double back-propagation); the model runs in its current mode.

    Shape:
        x, delta: (N, C, H, W); y: (N,). Returns (N, C, H, W).
    """
    d = delta.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x + d), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, d, create_graph=create_graph)
    return grad


def policy_problem(policy: Any) -> str | None:
    """Why ``z_from=raw_step`` cannot use this policy's episodes (one line with the fix), or None.

    The default linearisation point needs exactly one attack step: its start point and first
    gradient. ``none`` (and ``pgd_at`` with 0 steps) make no step, so there is no first
    gradient; multi-step policies' later steps and learned step/iteration choices would be
    computed and ignored. Single-step policies fit: ``fgsm_rs`` (the reference's start),
    ``fgsm_at``, ``fgsm_sdi`` and ``fgsm_pgi`` (learned starts).
    """
    name = getattr(policy, "name", "")
    steps = getattr(policy, "steps", 1) if name == "pgd_at" else 1
    if name == "none" or steps == 0:
        return (f"policy={name} makes no attack step, so at_loss.z_from=raw_step has no first "
                "gradient for Fast-BAT's linearisation point; use policy=fgsm_rs (the "
                "reference's uniform start) or at_loss.z_from=auto")
    if name in MULTI_STEP_POLICIES or steps > 1:
        return (f"policy={name} takes several attack steps per sample, but at_loss.z_from="
                "raw_step reads only the start point and the first gradient; use "
                f"policy=fgsm_rs, or at_loss.z_from=auto to linearise at policy={name}'s example")
    return None


@dataclass(frozen=True)
class FastBatConfig(ATLossConfig):
    """Fast-BAT: bi-level fast AT with the implicit-gradient target step."""

    limits: ClassVar[dict[str, Limit]] = {**ATLossConfig.limits, "lam": POSITIVE,
                                          "step": POSITIVE, "mask_tol": NON_NEGATIVE}

    name: str = setting("fast_bat", "registry id.")
    lam: float | None = setting(10.0, "λ weighting the implicit term (reference 10); null = 1/γ "
                                      "(the reference's --lmbda 0: the term is then the exact "
                                      "derivative of δ*).")
    step: float | None = setting(None, "raw-gradient step γ of the lower level, in input units "
                                       "per unit of the summed per-sample CE gradient; null = the "
                                       "reference's 5000/255 for ε ≤ 8/255, else 2000/255.")
    linearisation: Linearisation = setting(Linearisation.raw, "raw (the method) or sign (the "
                                                              "paper's pitfall: the implicit term "
                                                              "vanishes; warns).")
    ig_point: IgPoint = setting(IgPoint.z, "where the implicit derivative is taken: z (reference "
                                           "code) or delta_star (the paper).")
    z_from: ZFrom = setting(ZFrom.auto, "the linearisation point: auto (per sample: raw_step "
                                        "after one-step episodes, the episode's example "
                                        "otherwise), raw_step (one raw step from the episode's "
                                        "start, the reference; single-step policies only) or "
                                        "episode (the episode's example).")
    mask: HMask = setting(HMask.inactive, "H = inactive (1 where no bound is active at δ*, "
                                          "reference) or ones.")
    mask_tol: float = setting(1e-7, "a coordinate within this distance of a bound counts as at "
                                    "the bound.")
    implicit: bool = setting(True, "add the implicit term (false: the upper level without it, an "
                                   "ablation that skips the double back-propagation).")
    lower_bn: BnMode = setting(BnMode.eval, "BatchNorm mode of the lower level's pass at z (eval, "
                                            "like the project's attacks; train, the reference's).")


@dataclass(frozen=True)
class LowerLevel:
    """Fast-BAT's lower level on one batch.

    Shape:
        z, delta_star, h, direction: (N, C, H, W); step, lam: (N,).

    Attributes:
        z: the linearisation point (detached).
        delta_star: δ* = Π(z + γ·direction) (detached), inside the ball and the box.
        h: H, 1 where no bound is active at δ* (all ones with ``mask=ones``).
        direction: the implicit term's first factor: the step direction (∇δ CE_sum or its
            sign) at the point of the implicit derivative (z, or δ*), from a pass in
            ``lower_bn`` mode; it carries a graph to θ when the implicit term is wanted.
        step: γ per sample.
        lam: λ per sample.
    """

    z: torch.Tensor
    delta_star: torch.Tensor
    h: torch.Tensor
    direction: torch.Tensor
    step: torch.Tensor
    lam: torch.Tensor


@dataclass(frozen=True)
class FastBatGradients:
    """The two parts of the Fast-BAT gradient for one batch (lists aligned with the params).

    Attributes:
        upper: ∇θ ℓ_tr(θ, δ*).
        implicit: the implicit term (zeros when disabled or vanishing).
        output: the loss output (ℓ_tr, its parts, the logits at δ*).
        lower: the lower-level solution.
    """

    upper: list[torch.Tensor]
    implicit: list[torch.Tensor]
    output: ATLossOutput
    lower: LowerLevel


@dataclass
class _UpperForward:
    train_loss: torch.Tensor  # 0-dim, graph to θ and to d
    d: torch.Tensor           # δ* as the leaf the forward was taken at
    direction: torch.Tensor   # the implicit term's first factor (LowerLevel.direction)
    logits: torch.Tensor
    per_sample: torch.Tensor


def _norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """‖concat(tensors)‖₂ as a 0-dim device tensor (no host sync)."""
    if not tensors:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


@register_at_loss(FastBatConfig)
class FastBat(ATLoss):
    """Fast-BAT's target step (see the module docstring)."""

    attack_loss: AttackLoss = AttackLoss.CE

    def __init__(self, config: FastBatConfig) -> None:
        super().__init__(config)
        self.linearisation = parse_option(Linearisation, config.linearisation,
                                          "at_loss.linearisation")
        self.ig_point = parse_option(IgPoint, config.ig_point, "at_loss.ig_point")
        self.z_from = parse_option(ZFrom, config.z_from, "at_loss.z_from")
        self.mask = parse_option(HMask, config.mask, "at_loss.mask")
        self.lower_bn = parse_option(BnMode, config.lower_bn, "at_loss.lower_bn")
        if config.lam is not None and not config.lam > 0:
            raise ValueError(f"at_loss.lam must be > 0 (or null for 1/step), got {config.lam}")
        if config.step is not None and not config.step > 0:
            raise ValueError(f"at_loss.step must be > 0 (or null for the reference's rule), got "
                             f"{config.step}")
        if not config.mask_tol >= 0:
            raise ValueError(f"at_loss.mask_tol must be >= 0, got {config.mask_tol}")
        if self.linearisation is Linearisation.sign and config.implicit:
            warnings.warn("at_loss.linearisation=sign makes Fast-BAT's implicit gradient zero "
                          "(d sign/dθ = 0): the method collapses into FGSM-AT; use "
                          "at_loss.linearisation=raw", UserWarning, stacklevel=2)
        extras = {Extra.first_grad} if self.z_from is not ZFrom.episode else set()
        #: the first gradient at the start point is the reference's first raw step (free).
        self.env_requirements = EnvRequirements(extras=frozenset(extras))

    # -- configuration checks --------------------------------------------------------------
    def check_setting(self, policy: Any, geometry: Geometry) -> str | None:
        if not geometry.has_inactive_mask:
            return (f"at_loss=fast_bat needs a threat whose projection clips coordinate by "
                    f"coordinate (its implicit gradient masks the coordinates at a bound); "
                    f"threat={geometry.name} has none: use threat=linf")
        return policy_problem(policy) if self.z_from is ZFrom.raw_step else None

    # -- the lower level -------------------------------------------------------------------
    def steps(self, eps: torch.Tensor) -> torch.Tensor:
        """γ per sample (N,) for the episode's budgets ε (N,)."""
        if self.config.step is None:
            return reference_step(eps)
        return torch.full_like(eps, float(self.config.step))

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        return grad if self.linearisation is Linearisation.raw else grad.sign()

    def _start(self, result: AttackResult, geometry: Geometry, step: torch.Tensor
               ) -> torch.Tensor:
        """The linearisation point z (N, C, H, W), detached (see ``z_from``)."""
        example = result.delta.detach()
        if self.z_from is ZFrom.episode:
            return example
        if result.first_grad is None:
            raise ValueError(f"at_loss=fast_bat (z_from={self.z_from.value}) needs the episode's "
                             "first gradient: build the env with the loss's env_requirements "
                             "(the 'first_grad' extra)")
        move = per_sample(step, result.delta0) * self._direction(result.first_grad)
        raw = geometry.project(result.delta0 + move, result.x, result.eps).detach()
        if self.z_from is ZFrom.raw_step:
            return raw
        one_step = (result.steps == 1).view(-1, *([1] * (raw.dim() - 1)))
        return torch.where(one_step, raw, example)

    def lower_level(self, model: nn.Module, result: AttackResult, with_graph: bool = True
                    ) -> LowerLevel:
        """z, δ*, H and the implicit term's direction for the episode's batch; the lower
        level's passes run in ``lower_bn`` mode (one at z; with ``ig_point=delta_star`` one more
        at δ*, so that both points see the same BatchNorm mode).

        ``with_graph``: keep the direction's graph to θ (for the implicit term).
        """
        geometry = result.geometry
        if geometry is None or not geometry.has_inactive_mask:
            name = "none" if geometry is None else geometry.name
            raise ValueError(f"at_loss=fast_bat needs the episode's geometry with an inactive "
                             f"mask (threat=linf), got {name}: build records with "
                             "AttackResult.from_tensors(..., geometry=...)")
        x, y, eps = result.x, result.y, result.eps.to(result.x.dtype)
        step = self.steps(eps)
        lam = 1.0 / step if self.config.lam is None else torch.full_like(step, self.config.lam)
        z = self._start(result, geometry, step)
        graph = with_graph and self.config.implicit
        at_z = self.ig_point is IgPoint.z
        with target_mode(model, self.lower_bn is BnMode.train):
            direction = self._direction(attack_gradient(model, x, y, z,
                                                        create_graph=graph and at_z))
            delta_star = geometry.project(z + per_sample(step, z) * direction.detach(), x,
                                          eps).detach()
            if graph and not at_z:
                direction = self._direction(attack_gradient(model, x, y, delta_star,
                                                            create_graph=True))
        if self.mask is HMask.ones:
            h = torch.ones_like(delta_star)
        else:
            inactive = geometry.inactive_mask(delta_star, x, eps, self.config.mask_tol)
            assert inactive is not None  # check_setting requires geometry.has_inactive_mask
            h = inactive
        return LowerLevel(z, delta_star, h, direction, step, lam)

    # -- the upper level -------------------------------------------------------------------
    def _forward(self, model: nn.Module, result: AttackResult, inputs: TargetInputs,
                 lower: LowerLevel) -> _UpperForward:
        """The upper level's training forward at δ* (ℓ_tr)."""
        d = lower.delta_star.detach().requires_grad_(True)
        logits = model(result.x + d)
        per = soft_cross_entropy(logits, result.y, self.true_class_prob)
        weight = inputs.weight
        train_loss = per.mean() if weight is None else (per * weight.to(per.dtype)).mean()
        return _UpperForward(train_loss, d, lower.direction, logits, per)

    def _implicit_objective(self, fwd: _UpperForward, lower: LowerLevel, v: torch.Tensor
                            ) -> torch.Tensor:
        """(1/λ)·Σᵢ⟨directionᵢ, Hᵢ ⊙ vᵢ⟩ with v = ∇δ ℓ_tr held fixed; its θ-gradient is the
        implicit term."""
        weighted = lower.h * v.detach() / per_sample(lower.lam, v)
        return (fwd.direction * weighted).sum()

    def _parts(self, train_loss: torch.Tensor, lower: LowerLevel) -> dict[str, torch.Tensor]:
        return {"loss": train_loss.detach(), "h_active_fraction": 1.0 - lower.h.mean()}

    def compute(self, model: nn.Module, result: AttackResult, inputs: TargetInputs
                ) -> ATLossOutput:
        """A surrogate whose θ-gradient is Fast-BAT's (ℓ_tr + the implicit objective); its
        ``parts["loss"]`` is ℓ_tr. :meth:`train_step` computes the same gradient directly."""
        lower = self.lower_level(model, result, with_graph=torch.is_grad_enabled())
        fwd = self._forward(model, result, inputs, lower)
        loss = fwd.train_loss
        if self.config.implicit and fwd.direction.requires_grad:
            (v,) = torch.autograd.grad(fwd.train_loss, fwd.d, retain_graph=True)
            loss = loss + self._implicit_objective(fwd, lower, v)
        return ATLossOutput(loss, self._parts(fwd.train_loss, lower), fwd.logits.detach(),
                            fwd.per_sample.detach())

    def gradients(self, model: nn.Module, result: AttackResult,
                  inputs: TargetInputs = TargetInputs(),
                  params: list[torch.Tensor] | None = None) -> FastBatGradients:
        """∇θ ℓ_tr and the implicit term for ``params`` (default: the model's trainable ones).

        One backward from ℓ_tr gives ∇θ ℓ_tr and v = ∇δ ℓ_tr together; a second one, through
        the direction's graph, gives the implicit term. Adds ``implicit_norm`` and
        ``upper_grad_norm`` to the parts.
        """
        if params is None:
            params = [p for p in model.parameters() if p.requires_grad]
        lower = self.lower_level(model, result)
        fwd = self._forward(model, result, inputs, lower)
        with_implicit = self.config.implicit and fwd.direction.requires_grad
        grads = torch.autograd.grad(fwd.train_loss, [fwd.d, *params], allow_unused=True)
        v = grads[0]
        upper = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads[1:])]
        if with_implicit:
            objective = self._implicit_objective(fwd, lower, v)
            found = torch.autograd.grad(objective, params, allow_unused=True)
            implicit = [torch.zeros_like(p) if g is None else g for p, g in zip(params, found)]
        else:
            implicit = [torch.zeros_like(p) for p in params]
        parts = self._parts(fwd.train_loss, lower)
        parts.update(implicit_norm=_norm(implicit), upper_grad_norm=_norm(upper))
        output = ATLossOutput(fwd.train_loss.detach(), parts, fwd.logits.detach(),
                              fwd.per_sample.detach())
        return FastBatGradients(upper, implicit, output, lower)

    def train_step(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                   result: AttackResult, inputs: TargetInputs = TargetInputs()) -> ATLossOutput:
        """One optimiser step on ∇θ ℓ_tr + the implicit term (model in train mode).

        The gradients come from ``torch.autograd.grad``, which a DistributedDataParallel
        wrapper does not see: the bare module computes them and they are averaged over the
        ranks here (a no-op for one process)."""
        model = getattr(model, "module", model)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        step = self.gradients(model, result, inputs, params)
        optimizer.zero_grad(set_to_none=True)
        for p, upper, implicit in zip(params, step.upper, step.implicit):
            p.grad = upper + implicit
        average_gradients(params)
        optimizer.step()
        return step.output
