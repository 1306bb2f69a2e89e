"""Threat-model geometry: projection, step rule, random start and FOSC, as pure functions.

Dimension letters used throughout the project (defined once, here):
    N  samples in the batch (= sub-environments of the attack env)
    C, H, W  image channels, height, width
    K  number of classes

Every function takes tensors and returns tensors; per-sample parameters (``eps``,
``alpha``) are tensors of shape ``(N,)`` (or python floats, broadcast to all samples).
Inputs are images in ``[0, 1]``; ``delta = x_adv - x``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch

Scalar = float | torch.Tensor


class Norm(str, Enum):
    """The closed set of supported threat models."""

    LINF = "linf"
    L2 = "l2"


def _per_sample(value: Scalar, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a float or an ``(N,)`` tensor to ``(N, 1, 1, 1)`` against ``like`` (N, ...)."""
    if not torch.is_tensor(value):
        value = torch.full((like.shape[0],), float(value), device=like.device, dtype=like.dtype)
    return value.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def _flat_norm(t: torch.Tensor, p: float) -> torch.Tensor:
    """Per-sample p-norm of ``t`` (N, ...) -> (N,)."""
    return torch.linalg.vector_norm(t.flatten(1), ord=p, dim=1)


def clip_to_box(delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Clip ``delta`` so that ``x + delta`` lies in the image box [0, 1]. Shapes (N, C, H, W)."""
    return (x + delta).clamp(0.0, 1.0) - x


def project_linf(delta: torch.Tensor, x: torch.Tensor, eps: Scalar) -> torch.Tensor:
    """Project onto {‖δ‖∞ ≤ eps} ∩ {x + δ ∈ [0, 1]} (exact: both sets are boxes).

    Shape:
        delta, x: (N, C, H, W); eps: float or (N,). Returns (N, C, H, W).
    """
    e = _per_sample(eps, delta)
    return clip_to_box(torch.maximum(torch.minimum(delta, e), -e), x)


def project_l2(delta: torch.Tensor, x: torch.Tensor, eps: Scalar) -> torch.Tensor:
    """Rescale onto the L2 ball of radius eps, then clip to the image box.

    Clipping to the box only shrinks coordinates towards 0 (the box contains δ = 0), so the
    result stays inside the ball; the map is idempotent. (It is the standard PGD-L2
    projection, not the exact Euclidean projection onto the intersection.)

    Shape:
        delta, x: (N, C, H, W); eps: float or (N,). Returns (N, C, H, W).
    """
    e = _per_sample(eps, delta)
    norm = _flat_norm(delta, 2.0).view_as(e)
    scale = torch.clamp(e / norm.clamp_min(1e-12), max=1.0)
    return clip_to_box(delta * scale, x)


def step_linf(delta: torch.Tensor, grad: torch.Tensor, alpha: Scalar) -> torch.Tensor:
    """Ascent step δ + α·sign(g) (unprojected). Shapes (N, C, H, W); alpha float or (N,)."""
    return delta + _per_sample(alpha, delta) * grad.sign()


def step_l2(delta: torch.Tensor, grad: torch.Tensor, alpha: Scalar) -> torch.Tensor:
    """Ascent step δ + α·g/‖g‖₂ per sample (unprojected); a zero gradient gives no step."""
    norm = _flat_norm(grad, 2.0).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))
    return delta + _per_sample(alpha, delta) * grad / norm


def random_init_linf(x: torch.Tensor, eps: Scalar, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
    """Uniform start in the L∞ ball, clipped to the box. Returns δ (N, C, H, W)."""
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return clip_to_box((2.0 * u - 1.0) * _per_sample(eps, x), x)


def random_init_l2(x: torch.Tensor, eps: Scalar, generator: torch.Generator | None = None
                   ) -> torch.Tensor:
    """Uniform start in the L2 ball (direction ~ Gaussian, radius ~ eps·U^(1/d)), box-clipped."""
    g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    direction = g / _flat_norm(g, 2.0).clamp_min(1e-12).view(-1, 1, 1, 1)
    d = x[0].numel()
    u = torch.rand((x.shape[0],), generator=generator, device=x.device, dtype=x.dtype)
    radius = _per_sample(eps, x) * u.pow(1.0 / d).view(-1, 1, 1, 1)
    return clip_to_box(direction * radius, x)


def fosc_linf(grad: torch.Tensor, offset: torch.Tensor, eps: Scalar) -> torch.Tensor:
    """First-order stationarity c = max_{‖x'−x⁰‖∞≤ε} ⟨x' − xᵏ, g⟩ = ε‖g‖₁ − ⟨xᵏ − x⁰, g⟩.

    ``grad`` must be the gradient of the *per-sample* loss (sum reduction over the batch), not
    of the batch mean (Dynamic AT, issue #1 of its reference code). ``offset`` is xᵏ − x⁰.

    Shape:
        grad, offset: (N, C, H, W); eps: float or (N,). Returns (N,), ≥ 0 when ‖offset‖∞ ≤ ε.
    """
    e = _per_sample(eps, grad).flatten()
    return e * _flat_norm(grad, 1.0) - (offset * grad).flatten(1).sum(1)


def fosc_l2(grad: torch.Tensor, offset: torch.Tensor, eps: Scalar) -> torch.Tensor:
    """L2 FOSC: ε‖g‖₂ − ⟨xᵏ − x⁰, g⟩ (maximum of the linearisation over the L2 ball). (N,)."""
    e = _per_sample(eps, grad).flatten()
    return e * _flat_norm(grad, 2.0) - (offset * grad).flatten(1).sum(1)


def perturbation_norm(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-sample norm of δ in the threat model's geometry. (N, ...) -> (N,)."""
    return _flat_norm(delta, float("inf") if norm is Norm.LINF else 2.0)


@dataclass(frozen=True)
class ThreatModel:
    """Binds one geometry's pure functions together. Stateless; cheap to construct.

    Attributes:
        norm: which ball.
    """

    norm: Norm

    def project(self, delta: torch.Tensor, x: torch.Tensor, eps: Scalar) -> torch.Tensor:
        """Project δ onto the eps-ball ∩ image box. (N, C, H, W)."""
        return project_linf(delta, x, eps) if self.norm is Norm.LINF else project_l2(delta, x, eps)

    def step(self, delta: torch.Tensor, grad: torch.Tensor, alpha: Scalar) -> torch.Tensor:
        """Unprojected ascent step. (N, C, H, W)."""
        return step_linf(delta, grad, alpha) if self.norm is Norm.LINF else step_l2(delta, grad, alpha)

    def random_init(self, x: torch.Tensor, eps: Scalar,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform random start inside the ball and the box. (N, C, H, W)."""
        if self.norm is Norm.LINF:
            return random_init_linf(x, eps, generator)
        return random_init_l2(x, eps, generator)

    def fosc(self, grad: torch.Tensor, offset: torch.Tensor, eps: Scalar) -> torch.Tensor:
        """FOSC per sample (N,) from the per-sample gradient and xᵏ − x⁰."""
        return fosc_linf(grad, offset, eps) if self.norm is Norm.LINF else fosc_l2(grad, offset, eps)

    def size(self, delta: torch.Tensor) -> torch.Tensor:
        """Per-sample norm of δ in this geometry (N,)."""
        return perturbation_norm(delta, self.norm)


def make_threat(norm: str | Norm) -> ThreatModel:
    """Build a threat model from its name; unknown names list the valid ones."""
    try:
        return ThreatModel(Norm(norm))
    except ValueError:
        valid = ", ".join(n.value for n in Norm)
        raise ValueError(f"unknown threat norm {norm!r}; valid: {valid}") from None
