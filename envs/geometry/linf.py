"""The L∞ geometry: δ with ‖δ‖∞ ≤ ε, sign-gradient steps, the exact box projection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from learned_at.envs.options import setting
from learned_at.envs.geometry.base import (Geometry, GeometryConfig, Scalar, clip_to_box, flat_norm,
                                           per_sample, register_geometry)


def project_linf(delta: torch.Tensor, x: torch.Tensor, eps: Scalar) -> torch.Tensor:
    """Project onto {‖δ‖∞ ≤ eps} ∩ {x + δ ∈ [0, 1]} (exact: both sets are boxes).

    Shape:
        delta, x: (N, C, H, W); eps: float or (N,). Returns (N, C, H, W).
    """
    e = per_sample(eps, delta)
    return clip_to_box(torch.maximum(torch.minimum(delta, e), -e), x)


def step_linf(delta: torch.Tensor, grad: torch.Tensor, alpha: Scalar) -> torch.Tensor:
    """Ascent step δ + α·sign(g) (unprojected). Shapes (N, C, H, W); alpha float or (N,)."""
    return delta + per_sample(alpha, delta) * grad.sign()


def random_init_linf(x: torch.Tensor, eps: Scalar, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
    """Uniform start in the L∞ ball, clipped to the box. Returns δ (N, C, H, W)."""
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return clip_to_box((2.0 * u - 1.0) * per_sample(eps, x), x)


def inactive_mask_linf(delta: torch.Tensor, x: torch.Tensor, eps: Scalar, tol: float = 1e-7
                       ) -> torch.Tensor:
    """1 where max(−x, −ε) + tol < δ < min(1 − x, ε) − tol (no bound active), else 0.

    The diagonal Jacobian of :func:`project_linf` (both sets are boxes, so the projection is a
    per-coordinate clip); Fast-BAT's H with the reference code's tolerance 1e-7.

    Shape:
        delta, x: (N, C, H, W); eps: float or (N,). Returns (N, C, H, W) in {0, 1}.
    """
    e = per_sample(eps, delta)
    low = torch.maximum(-x, -e)
    high = torch.minimum(1.0 - x, e)
    return ((delta > low + tol) & (delta < high - tol)).to(delta.dtype)


def fosc_linf(grad: torch.Tensor, offset: torch.Tensor, eps: Scalar) -> torch.Tensor:
    """First-order stationarity c = max_{‖x'−x⁰‖∞≤ε} ⟨x' − xᵏ, g⟩ = ε‖g‖₁ − ⟨xᵏ − x⁰, g⟩.

    ``grad`` must be the gradient of the *per-sample* loss (sum reduction over the batch), not
    of the batch mean (Dynamic AT, issue #1 of its reference code). ``offset`` is xᵏ − x⁰.

    Shape:
        grad, offset: (N, C, H, W); eps: float or (N,). Returns (N,), ≥ 0 when ‖offset‖∞ ≤ ε.
    """
    e = per_sample(eps, grad).flatten()
    return e * flat_norm(grad, 1.0) - (offset * grad).flatten(1).sum(1)


@dataclass(frozen=True)
class LinfConfig(GeometryConfig):
    """L∞ threat model (``threat=linf``)."""

    name: str = setting("linf", "registry id.")
    eps: float | None = setting(None, "radius in [0, 1]-pixel units; None = preset (digits 0.2, "
                                      "mnist 0.3, cifar 8/255).")


@register_geometry(LinfConfig)
class Linf(Geometry):
    """‖δ‖∞ ≤ ε; PGD steps α·sign(∇)."""

    autoattack_norm: ClassVar[str | None] = "Linf"
    default_budgets: ClassVar[dict[str, float]] = {"digits": 0.2, "mnist": 0.3,
                                                   "cifar10": 8 / 255, "cifar100": 8 / 255}
    has_corner_init: ClassVar[bool] = True

    def check_budget(self, eps: float, image_shape: tuple[int, int, int]) -> str | None:
        if not 0 <= eps <= 1:
            return (f"threat.eps={eps:g} is out of range: accepted [0, 1] for threat=linf "
                    "(pixels are in [0, 1])")
        return None

    def erasing_budget(self, image_shape: tuple[int, ...]) -> float:
        """0.5: every image in [0, 1] reaches the constant grey image."""
        return 0.5

    def step(self, delta: torch.Tensor, grad: torch.Tensor, alpha: Scalar) -> torch.Tensor:
        return step_linf(delta, grad, alpha)

    def project(self, delta: torch.Tensor, x: torch.Tensor, eps: Scalar) -> torch.Tensor:
        return project_linf(delta, x, eps)

    def size(self, delta: torch.Tensor) -> torch.Tensor:
        return flat_norm(delta, float("inf"))

    def random_delta(self, x: torch.Tensor, eps: Scalar,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        return random_init_linf(x, eps, generator)

    def corner_init(self, x: torch.Tensor, eps: Scalar,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """ε·sign(U(−1, 1)) per coordinate (FGSM-PGI's reference code). (N, C, H, W)."""
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return per_sample(eps, x) * torch.sign(2.0 * u - 1.0)

    def fosc(self, grad: torch.Tensor, offset: torch.Tensor, eps: Scalar) -> torch.Tensor:
        return fosc_linf(grad, offset, eps)

    def inactive_mask(self, delta: torch.Tensor, x: torch.Tensor, eps: Scalar,
                      tol: float = 1e-7) -> torch.Tensor:
        return inactive_mask_linf(delta, x, eps, tol)
