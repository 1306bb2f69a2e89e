"""The record of one attack episode: everything policies, AT losses and metrics read after it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from learned_at.envs.geometry.base import AttackState, Geometry


@dataclass(frozen=True)
class AttackResult:
    """One finished attack on one batch (frozen; tensors on the target's device).

    Shape (N = samples of the batch):
        x, x_adv, delta, delta0: (N, C, H, W); y, index: (N,) int64;
        eps, alpha: (N,) float (budget in the geometry's unit, step size);
        budget, steps, passes: (N,) int64.

    Attributes:
        x: clean inputs in [0, 1].
        y: labels.
        index: data-set indices of the samples.
        x_adv: the adversarial examples x + δ; they carry an autograd graph only when the
            episode ran in the env's differentiable mode.
        delta: the final perturbation δ (as the geometry holds it; x_adv − x up to rounding).
        delta0: the start perturbation δ₀ (projected, detached); :attr:`x_init` = x + δ₀.
        eps: per-sample budget (a radius ε, or a pixel count k, as the geometry counts).
        alpha: per-sample step size.
        budget: per-sample iteration budget.
        steps: gradient steps actually taken.
        passes: forward/backward passes actually paid.
        loss: (N,) attack loss at each sample's last *evaluated* iterate (the final example
            when the env observes final iterates, else the iterate of the last gradient).
        correct: (N,) bool, classified correctly at that iterate.
        fosc: (N,) FOSC at that iterate, None when the geometry has no FOSC.
        state: the geometry's final attack state.
        first_grad: (N, C, H, W) attack-loss gradient at x + δ₀ (the ``first_grad`` extra).
        clean_logits: (N, K) logits at the clean point (the ``clean_logits`` extra).
        clean_grad_sign: (N, C, H, W) sign of ∇ₓ CE at the clean point.
        offsets: (N, 2) int64 crop offsets of the loader's augmentation, else None.
        flipped: (N,) bool flips of the loader's augmentation, else None.
        geometry: the threat geometry the episode ran in (losses that redo geometric steps,
            such as Fast-BAT's lower level, project and mask with it); None for records built
            without one.
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    x_adv: torch.Tensor
    delta: torch.Tensor
    delta0: torch.Tensor
    eps: torch.Tensor
    alpha: torch.Tensor
    budget: torch.Tensor
    steps: torch.Tensor
    passes: torch.Tensor
    loss: torch.Tensor
    correct: torch.Tensor
    fosc: torch.Tensor | None = None
    state: AttackState | None = field(default=None, repr=False)
    first_grad: torch.Tensor | None = None
    clean_logits: torch.Tensor | None = None
    clean_grad_sign: torch.Tensor | None = None
    offsets: torch.Tensor | None = None
    flipped: torch.Tensor | None = None
    geometry: Geometry | None = field(default=None, repr=False, compare=False)

    @property
    def x_init(self) -> torch.Tensor:
        """The attack's starting point x + δ₀ (N, C, H, W), detached (computed on access)."""
        return self.x + self.delta0

    @property
    def augmentation(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(offsets, flipped) of the loader's augmentation, (None, None) without."""
        return self.offsets, self.flipped

    def detached(self) -> AttackResult:
        """The same record with x_adv detached (what the target's step trains on)."""
        if not self.x_adv.requires_grad:
            return self
        from dataclasses import replace

        return replace(self, x_adv=self.x_adv.detach(), delta=self.delta.detach())

    @classmethod
    def from_tensors(cls, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, *,
                     x_init: torch.Tensor | None = None, index: torch.Tensor | None = None,
                     geometry: Geometry | None = None,
                     **fields: torch.Tensor | None) -> AttackResult:
        """A record for examples made outside the env (tests, direct callers of AT losses).

        Unknown per-sample fields are filled with zeros (eps, alpha, loss), ones (budget,
        steps, passes) or False (correct); ``x_init`` defaults to the clean input.
        """
        n, dev = x.shape[0], x.device
        zeros = torch.zeros(n, device=dev)
        ones = torch.ones(n, dtype=torch.long, device=dev)
        base: dict[str, Any] = dict(index=torch.arange(n, device=dev) if index is None else index,
                    delta0=torch.zeros_like(x) if x_init is None else (x_init - x).detach(),
                    eps=zeros, alpha=zeros, budget=ones, steps=ones, passes=ones, loss=zeros,
                    correct=torch.zeros(n, dtype=torch.bool, device=dev))
        base.update({k: v for k, v in fields.items() if v is not None})
        return cls(x=x, y=y, x_adv=x_adv, delta=x_adv - x, geometry=geometry, **base)
