"""The L0 geometry: at most k changed pixels, each by any amount that keeps the image in [0, 1].

A pixel counts as changed when any of its channels changed; the budget k counts pixels
(:attr:`BudgetUnit.pixels`). The attack is sparse PGD (sPGD, Zhong, Huang & Liu, ICML 2024;
docs/references.md §6.2): the perturbation of one sample is δ = p ⊙ M(m) with

* a magnitude ``p`` (N, C, H, W), bounded by the magnitude bound 1 (any value with x + p in
  [0, 1]), and
* mask logits ``m`` (N, 1, H, W), one per pixel and shared over channels, whose top-k (of σ(m),
  i.e. of m) is the binary mask M(m).

One ascent step (:meth:`L0.ascend`), from the gradient g = ∂L/∂x_adv at x + δ:

* ∂L/∂p = g ⊙ M (the *projected* gradient) or g ⊙ σ(m) (the *unprojected*, continuous-mask
  gradient, which also moves the magnitudes of unselected pixels);
  ∂L/∂m = Σ_c (g ⊙ p) · σ(m)(1 − σ(m));
* p ← clip(p + α·sign(∂L/∂p)) to [−1, 1] ∩ [−x, 1 − x] (α = 0.25 of the magnitude bound);
* m ← m + β·√(H·W)·∂L/∂m / ‖∂L/∂m‖₂ per sample (β = ``mask_step`` = 0.25; no step where the
  norm is below 2e-10);
* a sample whose mask has not changed for ``patience`` consecutive steps has m re-drawn from
  N(0, 1) (10 in training, 3 in evaluation, as the reference).

The gradient mode is per sample and drawn once per episode (``gradient=random``: projected or
unprojected with probability 1/2 each), or fixed (``projected`` / ``unprojected``: the two white-box
stages of Sparse-AutoAttack). The per-sample budget travels as the float ``eps`` (N,) holding
whole pixel counts (a fractional budget is floored); the state keeps it as ``k``.

The attack state holds ``p``, ``m``, the current mask ``mask`` (N, 1, H, W) float 0/1, ``k``
(N,) int64, the per-sample mode ``unprojected`` (N,) bool and the patience counter ``stall``
(N,) int64. Every random draw (the start, the mode, re-drawn masks) comes from the episode's
generator.

Departures from the reference code (sPGD@6624853), each on purpose:

* The start from a policy's perturbation δ₀ (:meth:`L0.start`) puts δ₀'s pixels on top of the
  mask: m holds i.i.d. N(0, 1) values, permuted so that δ₀'s support gets the largest ones; the
  magnitudes of the pixels off the mask are drawn U(−1, 1) (box-clipped) as the reference's
  random start does for every pixel, so the mask gradient is informative from the first step.
  With δ₀ = 0 the mask pixels start at p = 0.
* The mode toggle is drawn per sample and per episode (the reference toggles the whole batch's
  mode with probability 1/2 before each batch, a Markov chain with the same marginal).
* The patience counter counts *consecutive* unchanged masks per sample (the reference resets
  the counter of every sample only when no sample's mask is unchanged, otherwise counts
  cumulatively).
* Top-k ranks m itself rather than σ(m) (same order; σ saturates in float32 for |m| > 17 and
  would create ties). Ties are broken by pixel index (stable sort), as in the reference.
* Without a generator (``generator=None``) the random parts are drawn from a fixed-seed local
  generator, so library calls never touch the global RNG.

FOSC has no L0 form here: :meth:`L0.fosc` returns None and ``policy=dynamic`` refuses the
geometry. Sparse evaluation attacks live in :mod:`envs.attacks`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import torch

from learned_at.envs.geometry.base import (AttackState, BudgetUnit, Geometry, GeometryConfig,
                                           Scalar, clip_to_box, register_geometry)
from learned_at.envs.options import setting, COUNT, POSITIVE, Limit, parse_option

MAGNITUDE_BOUND = 1.0
"""ε of the magnitude p: any per-channel change that stays in [0, 1] (sPGD's ε = 255/255)."""


class SparseGradient(str, Enum):
    """Which gradient of the magnitude sPGD ascends (docs/references.md §6.2)."""

    projected = "projected"      # g ⊙ M(m): only the selected pixels move
    unprojected = "unprojected"  # g ⊙ σ(m): every pixel's magnitude moves
    random = "random"            # per sample and episode, each with probability 1/2


def budget_pixels(eps: Scalar, like: torch.Tensor) -> torch.Tensor:
    """Whole-pixel budgets (N,) int64 from a float or (N,) budget (floored, ≥ 0)."""
    n = like.shape[0]
    if not torch.is_tensor(eps):
        eps = torch.full((n,), float(eps), device=like.device)
    return torch.floor(eps.to(torch.float64) + 1e-6).clamp_min(0).long().to(like.device)


def topk_mask(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The k largest entries of each row, with a per-row k; ties go to the lower index.

    Shape:
        scores: (N, P); k: (N,) int64. Returns (N, P) bool with min(k, P) ones per row.
    """
    order = scores.argsort(dim=1, descending=True, stable=True)
    positions = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, positions)
    return rank < k.view(-1, 1)


def project_l0(delta: torch.Tensor, x: torch.Tensor, eps: Scalar) -> torch.Tensor:
    """Euclidean projection onto {at most k changed pixels} ∩ {x + δ ∈ [0, 1]}.

    Clipping is separable per coordinate, so keeping pixel j costs ‖δ_j − clip(δ_j)‖² and dropping
    it costs ‖δ_j‖²: the projection keeps the k pixels with the largest gain
    ‖δ_j‖² − ‖δ_j − clip(δ_j)‖² = Σ_c clip(δ_j)(2δ_j − clip(δ_j)) ≥ 0, box-clipped.

    Shape:
        delta, x: (N, C, H, W); eps: float or (N,) pixel budgets. Returns (N, C, H, W).
    """
    clipped = clip_to_box(delta, x)
    gain = (clipped * (2 * delta - clipped)).sum(1).flatten(1)  # (N, H·W)
    keep = topk_mask(gain, budget_pixels(eps, x)).view(x.shape[0], 1, *x.shape[2:])
    return clipped * keep


def changed_pixels(delta: torch.Tensor) -> torch.Tensor:
    """Pixels with any channel changed, per sample. (N, C, H, W) -> (N,) float."""
    return (delta != 0).any(1).flatten(1).sum(1).to(delta.dtype)


def random_magnitude(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """U(−1, 1) per coordinate, clipped so that x + p ∈ [0, 1] (sPGD's random start). (N,C,H,W)."""
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return clip_to_box((2 * u - 1) * MAGNITUDE_BOUND, x)


def random_init_l0(x: torch.Tensor, eps: Scalar, generator: torch.Generator | None = None
                   ) -> torch.Tensor:
    """k uniformly chosen pixels with U(−1, 1) box-clipped magnitudes. Returns δ (N, C, H, W)."""
    g = _generator(generator, x.device)
    n, _, h, w = x.shape
    keys = torch.rand((n, h * w), generator=g, device=x.device)
    mask = topk_mask(keys, budget_pixels(eps, x)).view(n, 1, h, w)
    return random_magnitude(x, g) * mask


def mask_step(m: torch.Tensor, grad_m: torch.Tensor, beta: float) -> torch.Tensor:
    """m + β·√(H·W)·g/‖g‖₂ per sample; no step where ‖g‖₂ < 2e-10. Shapes (N, 1, H, W)."""
    norm = grad_m.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    scale = beta * math.sqrt(m[0].numel()) * (norm >= 2e-10).to(m.dtype)
    return m + scale * grad_m / norm.clamp_min(1e-10)


def magnitude_step(p: torch.Tensor, grad_p: torch.Tensor, alpha: Scalar, x: torch.Tensor
                   ) -> torch.Tensor:
    """p + α·sign(g), clipped to [−1, 1] ∩ [−x, 1 − x]. Shapes (N, C, H, W); α float or (N,)."""
    a = alpha if not torch.is_tensor(alpha) else alpha.to(p.dtype).view(-1, 1, 1, 1)
    step = p + a * grad_p.sign()
    return clip_to_box(step.clamp(-MAGNITUDE_BOUND, MAGNITUDE_BOUND), x)


def _generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator:
    """The caller's generator, or a fixed-seed local one (never the global RNG)."""
    return generator if generator is not None else torch.Generator(device=device).manual_seed(0)


@dataclass(frozen=True)
class L0Config(GeometryConfig):
    """L0 threat model (``threat=l0 threat.k=<pixels>``)."""

    name: str = setting("l0", "registry id.")
    limits: ClassVar[dict[str, Limit]] = {"k": COUNT, "mask_step": POSITIVE, "patience": COUNT}

    eps: float | None = setting(None, "unused (L0 counts pixels: set threat.k); must stay None.")
    k: int | None = setting(None, "changed pixels allowed; None = preset (digits 2, mnist 20, "
                                  "cifar10/100 20).")
    gradient: SparseGradient = setting(SparseGradient.random, "sPGD's magnitude gradient: random "
                                                              "(per sample and episode, "
                                                              "training), projected or "
                                                              "unprojected.")
    mask_step: float = setting(0.25, "β of the mask-logit step β·√(H·W)·g/‖g‖₂ (sPGD 0.25).")
    patience: int = setting(10, "unchanged-mask steps before m is re-drawn (sPGD: 10 training, 3 "
                                "evaluation).")

    def __post_init__(self) -> None:
        if self.eps is not None:
            raise ValueError("threat=l0 counts changed pixels: set threat.k=<pixels>, not "
                             "threat.eps")
        if self.k is not None and not (self.k >= 0 and float(self.k) == int(self.k)):
            raise ValueError(f"threat.k must be a whole number of pixels >= 0, got {self.k}")
        if self.patience < 1:
            raise ValueError(f"threat.patience must be >= 1, got {self.patience}")
        if not self.mask_step >= 0:
            raise ValueError(f"threat.mask_step must be >= 0, got {self.mask_step}")
        object.__setattr__(self, "gradient",
                           parse_option(SparseGradient, self.gradient, "threat.gradient"))


@register_geometry(L0Config)
class L0(Geometry):
    """At most k changed pixels; sPGD steps on (magnitude, mask logits). See the module docstring.

    Budget presets: CIFAR-10/100 k = 20 of 1024 pixels (2 %, the papers' evaluation budget);
    MNIST 20; digits (8×8, 64 pixels) k = 2 (3 %, the closest whole number to CIFAR's share).
    Measured on digits (digits_cnn, 10 epochs, one seed, 200 test images, sAA with 100 sPGD
    steps per stage and 1 000 queries): undefended 97.0 % clean / 12.5 % sAA; 20-step sAT
    95.5 / 50.5; 20-step sTRADES 92.5 / 56.5; Fast-LS-ℓ0 94.5 / 46.0. At k = 4 an undefended
    digits CNN is at 0 % sAA, at k = 1 at 62 %: k = 2 separates defended from undefended models
    as k = 20 does on CIFAR-10.
    """

    budget_unit: ClassVar[BudgetUnit] = BudgetUnit.pixels
    autoattack_norm: ClassVar[str | None] = None
    default_budgets: ClassVar[dict[str, float]] = {"digits": 2, "mnist": 20, "cifar10": 20,
                                                   "cifar100": 20}
    budget_symbol: ClassVar[str] = "k"
    budget_setting: ClassVar[str] = "threat.k=<pixels>"
    at_loss_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "trades": {"beta": 3.0, "attack": "ce"}}  # sTRADES (docs/references.md §6.3)
    config: L0Config  # set by Geometry.__init__, always an L0Config here

    def __init__(self, config: L0Config | None = None) -> None:
        super().__init__(config if config is not None else L0Config())
        self.gradient = SparseGradient(self.config.gradient)

    def __repr__(self) -> str:
        return (f"L0(gradient={self.gradient.value}, patience={self.config.patience}, "
                f"mask_step={self.config.mask_step})")

    def with_options(self, **changes: Any) -> L0:
        """The same geometry with some config fields changed (e.g. an evaluation's gradient mode
        and patience)."""
        return L0(dataclasses.replace(self.config, **changes))

    # -- budgets -----------------------------------------------------------------------
    def with_budget(self, budget: float) -> L0:
        return L0(dataclasses.replace(self.config, k=int(budget)))

    def nominal_budget(self) -> float | None:
        return None if self.config.k is None else float(self.config.k)

    def check_budget(self, eps: float, image_shape: tuple[int, int, int]) -> str | None:
        pixels = image_shape[-2] * image_shape[-1]
        if not (0 <= eps <= pixels and float(eps) == int(eps)):
            return (f"threat.k must be a whole number of pixels in [0, {pixels}] for "
                    f"{tuple(image_shape)} images, got {eps}")
        return None

    def step_size(self, eps: Scalar, ratio: float) -> Scalar:
        """``ratio`` of the magnitude bound 1 (sPGD's α = 0.25 is ``ratio=0.25``), whatever k."""
        if torch.is_tensor(eps):
            return torch.full_like(eps, ratio * MAGNITUDE_BOUND, dtype=torch.get_default_dtype())
        return ratio * MAGNITUDE_BOUND

    def scaled_budget(self, eps: float, factor: float) -> float:
        """Whole pixels: ``floor(factor·k)``."""
        return float(math.floor(factor * eps + 1e-9))

    def erasing_budget(self, image_shape: tuple[int, ...]) -> float:
        """H·W: with every pixel free, any image in [0, 1] reaches any other."""
        return float(image_shape[-2] * image_shape[-1])

    def strategy_grids(self, unit: float, eps_multiples: tuple[int, ...],
                       alpha_multiples: tuple[int, ...]) -> tuple[tuple[float, ...],
                                                                   tuple[float, ...]]:
        """k grid: whole pixels round(unit·j) ≥ 1 (unit = k/8), duplicates dropped; α grid:
        magnitude steps j/8 of the magnitude bound (LAS-AT's α multiples 1..5 → 0.125..0.625,
        sPGD's 0.25 among them)."""
        ks = sorted({max(1, round(unit * j)) for j in eps_multiples})
        return (tuple(float(k) for k in ks),
                tuple(MAGNITUDE_BOUND * j / 8 for j in alpha_multiples))

    # -- state -------------------------------------------------------------------------
    def start(self, x: torch.Tensor, eps: Scalar, delta0: torch.Tensor | None,
              generator: torch.Generator | None = None) -> AttackState:
        """(p, m) whose perturbation is the projection of δ₀ (see the module docstring).

        Shape:
            x: (N, C, H, W); eps: float or (N,) pixels; delta0: (N, C, H, W) or None (δ = 0).
        """
        g = _generator(generator, x.device)
        n, _, h, w = x.shape
        k = budget_pixels(eps, x)
        normal = torch.randn((n, h * w), generator=g, device=x.device, dtype=x.dtype)
        dormant = random_magnitude(x, g)
        keys = torch.rand((n, h * w), generator=g, device=x.device)
        if delta0 is None:
            d = torch.zeros_like(x)
        else:
            d = project_l0(delta0, x, k.to(x.dtype))
            keys = keys + (d.detach() != 0).any(1).flatten(1).to(keys.dtype)  # support first
        order = keys.argsort(dim=1, descending=True)
        m = torch.empty_like(normal).scatter_(1, order, normal.sort(1, descending=True).values)
        mask = topk_mask(m, k).view(n, 1, h, w)
        p = torch.where(mask, d, dormant)
        if self.gradient is SparseGradient.random:
            unprojected = torch.rand((n,), generator=g, device=x.device) < 0.5
        else:
            unprojected = torch.full((n,), self.gradient is SparseGradient.unprojected,
                                     device=x.device)
        return AttackState({"p": p, "m": m.view(n, 1, h, w), "mask": mask.to(x.dtype), "k": k,
                            "unprojected": unprojected,
                            "stall": torch.zeros(n, dtype=torch.long, device=x.device)})

    def perturbation(self, state: AttackState) -> torch.Tensor:
        """δ = p ⊙ M(m), (N, C, H, W) (differentiable in p)."""
        return state["p"] * state["mask"]

    def ascend(self, state: AttackState, grad: torch.Tensor, x: torch.Tensor, eps: Scalar,
               alpha: Scalar, generator: torch.Generator | None = None) -> AttackState:
        """One sPGD step (module docstring); ``alpha`` is the magnitude step (N,) or float.

        Shape:
            grad: (N, C, H, W) = ∂L/∂x_adv at x + δ; x: (N, C, H, W); eps: (N,) pixels.
        """
        g = _generator(generator, x.device)
        grad = grad.detach()
        p, m, mask = state["p"], state["m"], state["mask"]
        n, _, h, w = x.shape
        k = budget_pixels(eps, x)
        sig = torch.sigmoid(m)
        unprojected = state["unprojected"].view(-1, 1, 1, 1)
        grad_p = grad * torch.where(unprojected, sig, mask)
        grad_m = (grad * p.detach()).sum(1, keepdim=True) * sig * (1 - sig)
        m_new = mask_step(m, grad_m, self.config.mask_step)
        p_new = magnitude_step(p, grad_p, alpha, x)
        new_mask = topk_mask(m_new.flatten(1), k)
        unchanged = (new_mask == mask.flatten(1).bool()).all(1)
        stall = torch.where(unchanged, state["stall"] + 1, torch.zeros_like(state["stall"]))
        redraw = stall >= self.config.patience
        fresh = torch.randn(m_new.shape, generator=g, device=x.device, dtype=m_new.dtype)
        m_new = torch.where(redraw.view(-1, 1, 1, 1), fresh, m_new)
        new_mask = topk_mask(m_new.flatten(1), k).view(n, 1, h, w)
        return AttackState({"p": p_new, "m": m_new, "mask": new_mask.to(x.dtype), "k": k,
                            "unprojected": state["unprojected"],
                            "stall": torch.where(redraw, torch.zeros_like(stall), stall)})

    # -- pure maths ----------------------------------------------------------------------
    def step(self, delta: torch.Tensor, grad: torch.Tensor, alpha: Scalar) -> torch.Tensor:
        """δ + α·sign(g) (unprojected; :meth:`project` restores the budget)."""
        a = alpha if not torch.is_tensor(alpha) else alpha.to(delta.dtype).view(-1, 1, 1, 1)
        return delta + a * grad.sign()

    def project(self, delta: torch.Tensor, x: torch.Tensor, eps: Scalar) -> torch.Tensor:
        return project_l0(delta, x, eps)

    def size(self, delta: torch.Tensor) -> torch.Tensor:
        """Changed pixels (any channel) per sample, (N,)."""
        return changed_pixels(delta)

    def random_delta(self, x: torch.Tensor, eps: Scalar,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        return random_init_l0(x, eps, generator)
