"""Fixed (non-learning) baseline policies: standard training, FGSM-AT, FGSM-RS and PGD-AT."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from learned_at.agents.base import Policy, PolicyConfig, register_policy
from learned_at.envs.attack_env import AttackAction, Obs
from learned_at.envs.options import setting, NON_NEGATIVE, NON_NEGATIVE_INT, Limit


def uniform_action(obs: Obs, eps: float, alpha: float | torch.Tensor, steps: int,
                   init: torch.Tensor | None) -> AttackAction:
    """The same (eps, alpha, budget) for every sample of the batch, as (N,) tensors."""
    n, dev = obs["x"].shape[0], obs["x"].device
    full = torch.full((n,), 1.0, device=dev)
    return AttackAction(eps=full * eps, alpha=full * alpha,
                        budget=torch.full((n,), steps, dtype=torch.long, device=dev), init=init)


@dataclass(frozen=True)
class NoAttackConfig(PolicyConfig):
    """Standard (non-adversarial) training: the attack makes no step."""

    name: str = "none"


@register_policy(NoAttackConfig)
class NoAttack(Policy):
    """Budget 0 for every sample: the 'adversarial' batch is the clean batch."""

    def act(self, obs: Obs, t: int, generator: torch.Generator | None) -> AttackAction | None:
        return uniform_action(obs, self.context.eps, 0.0, 0, None) if t == 0 else None


@dataclass(frozen=True)
class FgsmAtConfig(PolicyConfig):
    """FGSM-AT (Goodfellow et al.): one sign step of size ``alpha_ratio``·ε from the clean point."""

    limits: ClassVar[dict[str, Limit]] = {"alpha_ratio": NON_NEGATIVE}

    name: str = "fgsm_at"
    alpha_ratio: float = setting(1.0, "step size as a multiple of ε.")
    random_start: bool = setting(False, "start from a uniform point of the ball instead of the "
                                        "clean input.")


@register_policy(FgsmAtConfig)
class FgsmAt(Policy):
    """One sign step, from the clean point or from a uniform random start."""

    def act(self, obs: Obs, t: int, generator: torch.Generator | None) -> AttackAction | None:
        if t:
            return None
        eps = self.context.eps
        init = (self.context.geometry.random_delta(obs["x"], eps, generator)
                if self.config.random_start else None)
        alpha = self.context.geometry.step_size(eps, self.config.alpha_ratio)
        return uniform_action(obs, eps, alpha, 1, init)


@dataclass(frozen=True)
class FgsmRsConfig(FgsmAtConfig):
    """FGSM-RS (Wong et al., 'Fast is better than free'): uniform start, α = 1.25ε, one step."""

    name: str = "fgsm_rs"
    alpha_ratio: float = 1.25
    random_start: bool = True


@register_policy(FgsmRsConfig)
class FgsmRs(FgsmAt):
    """FGSM-AT with its random-start defaults (a separate id so ablations read clearly)."""


@dataclass(frozen=True)
class PgdAtConfig(PolicyConfig):
    """PGD-AT (Madry et al.): K steps of size α from a random start."""

    limits: ClassVar[dict[str, Limit]] = {"steps": NON_NEGATIVE_INT, "alpha_ratio": NON_NEGATIVE}

    name: str = "pgd_at"
    steps: int = setting(10, "iterations K per sample.")
    alpha_ratio: float = setting(0.25, "step size α as a multiple of ε (0.25: α = ε/4, i.e. 2/255 "
                                       "at 8/255).")
    random_start: bool = setting(True, "start from a uniform point of the ball (else from the "
                                       "clean input).")


@register_policy(PgdAtConfig)
class PgdAt(Policy):
    """The same K, α, ε for every sample."""

    @property
    def steps(self) -> int:
        """K of the current epoch (constant here; schedules override it)."""
        return self.config.steps

    def act(self, obs: Obs, t: int, generator: torch.Generator | None) -> AttackAction | None:
        if t:
            return None
        eps = self.context.eps
        init = (self.context.geometry.random_delta(obs["x"], eps, generator)
                if self.config.random_start else None)
        alpha = self.context.geometry.step_size(eps, self.config.alpha_ratio)
        return uniform_action(obs, eps, alpha, self.steps, init)
