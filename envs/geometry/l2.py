"""The L2 geometry: δ with ‖δ‖₂ ≤ ε, normalised-gradient steps, rescale-then-clip projection."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from learned_at.envs.options import setting
from learned_at.envs.geometry.base import (Geometry, GeometryConfig, Scalar, clip_to_box, flat_norm,
                                           per_sample, register_geometry)


def project_l2(delta: torch.Tensor, x: torch.Tensor, eps: Scalar) -> torch.Tensor:
    """Rescale onto the L2 ball of radius eps, then clip to the image box.

    Clipping to the box only shrinks coordinates towards 0 (the box contains δ = 0), so the
    result stays inside the ball; the map is idempotent. (It is the standard PGD-L2
    projection, not the exact Euclidean projection onto the intersection.)

    Shape:
        delta, x: (N, C, H, W); eps: float or (N,). Returns (N, C, H, W).
    """
    e = per_sample(eps, delta)
    norm = flat_norm(delta, 2.0).view_as(e)
    scale = torch.clamp(e / norm.clamp_min(1e-12), max=1.0)
    return clip_to_box(delta * scale, x)


def step_l2(delta: torch.Tensor, grad: torch.Tensor, alpha: Scalar) -> torch.Tensor:
    """Ascent step δ + α·g/‖g‖₂ per sample (unprojected); a zero gradient gives no step."""
    norm = flat_norm(grad, 2.0).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))
    return delta + per_sample(alpha, delta) * grad / norm


def random_init_l2(x: torch.Tensor, eps: Scalar, generator: torch.Generator | None = None
                   ) -> torch.Tensor:
    """Uniform start in the L2 ball (direction ~ Gaussian, radius ~ eps·U^(1/d)), box-clipped."""
    g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    direction = g / flat_norm(g, 2.0).clamp_min(1e-12).view(-1, 1, 1, 1)
    d = x[0].numel()
    u = torch.rand((x.shape[0],), generator=generator, device=x.device, dtype=x.dtype)
    radius = per_sample(eps, x) * u.pow(1.0 / d).view(-1, 1, 1, 1)
    return clip_to_box(direction * radius, x)


def fosc_l2(grad: torch.Tensor, offset: torch.Tensor, eps: Scalar) -> torch.Tensor:
    """L2 FOSC: ε‖g‖₂ − ⟨xᵏ − x⁰, g⟩ (maximum of the linearisation over the L2 ball). (N,)."""
    e = per_sample(eps, grad).flatten()
    return e * flat_norm(grad, 2.0) - (offset * grad).flatten(1).sum(1)


@dataclass(frozen=True)
class L2Config(GeometryConfig):
    """L2 threat model (``threat=l2``)."""

    name: str = setting("l2", "registry id.")
    eps: float | None = setting(None, "radius in [0, 1]-pixel units; None = preset (digits 1.0, "
                                      "mnist 2.0, cifar 0.5).")


@register_geometry(L2Config)
class L2(Geometry):
    """‖δ‖₂ ≤ ε; PGD steps α·∇/‖∇‖₂."""

    autoattack_norm: ClassVar[str | None] = "L2"
    default_budgets: ClassVar[dict[str, float]] = {"digits": 1.0, "mnist": 2.0, "cifar10": 0.5,
                                                   "cifar100": 0.5}

    def check_budget(self, eps: float, image_shape: tuple[int, int, int]) -> str | None:
        top = math.sqrt(math.prod(image_shape))
        if not 0 <= eps <= top:
            return (f"threat.eps={eps:g} is out of range: accepted [0, {top:.4g}] for threat=l2 "
                    f"on {image_shape} images (the diameter of the image box)")
        return None

    def erasing_budget(self, image_shape: tuple[int, ...]) -> float:
        """0.5·√d: every image in [0, 1] reaches the constant grey image."""
        return 0.5 * math.sqrt(math.prod(image_shape))

    def step(self, delta: torch.Tensor, grad: torch.Tensor, alpha: Scalar) -> torch.Tensor:
        return step_l2(delta, grad, alpha)

    def project(self, delta: torch.Tensor, x: torch.Tensor, eps: Scalar) -> torch.Tensor:
        return project_l2(delta, x, eps)

    def size(self, delta: torch.Tensor) -> torch.Tensor:
        return flat_norm(delta, 2.0)

    def random_delta(self, x: torch.Tensor, eps: Scalar,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        return random_init_l2(x, eps, generator)

    def fosc(self, grad: torch.Tensor, offset: torch.Tensor, eps: Scalar) -> torch.Tensor:
        return fosc_l2(grad, offset, eps)
