"""Curriculum AT (Cai et al., IJCAI 2018): PGD whose iteration count grows over training.

Schedule (0-based epoch t, T′ = ramp_fraction · epochs):

    K_t = round(k_min + (k_max − k_min) · min(t / T′, 1))

Why this one: Cai et al. move to the next "lesson" (one more PGD step) once the accuracy
against the current attack is high enough, which needs an extra attack evaluation per epoch and
a tuned accuracy trigger; the settings the Dynamic AT paper used for its curriculum baseline are
not published (docs/references.md §4.6). A linear epoch-based ramp needs neither, and with the same
T′ as the dynamic policy (5/6 of the run, K from 1 to 10) both policies harden the attack over
the same span and spend a comparable total number of steps, so the comparison isolates *how*
the steps are allocated (uniformly per epoch vs. per sample by FOSC). The step size is fixed
(α = ε/4, as in the dynamic policy and PGD-AT) and every lesson starts from a random point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from learned_at.agents.base import PolicyConfig, PolicyContext, register_policy
from learned_at.agents.fixed import PgdAt
from learned_at.envs.options import setting, NON_NEGATIVE, NON_NEGATIVE_INT, Limit


def curriculum_steps(epoch: int, k_min: int, k_max: int, ramp_epochs: float) -> int:
    """K_t = round(k_min + (k_max − k_min)·min(t/T′, 1)) for 0-based epoch t."""
    progress = min(epoch / ramp_epochs, 1.0) if ramp_epochs > 0 else 1.0
    return int(round(k_min + (k_max - k_min) * progress))


@dataclass(frozen=True)
class CurriculumConfig(PolicyConfig):
    """Curriculum AT: every sample gets K_t PGD steps, K_t growing linearly over epochs."""

    limits: ClassVar[dict[str, Limit]] = {
        "k_min": NON_NEGATIVE_INT, "k_max": NON_NEGATIVE_INT, "ramp_fraction": NON_NEGATIVE,
        "alpha_ratio": NON_NEGATIVE}

    name: str = "curriculum"
    k_min: int = setting(1, "PGD steps at epoch 0.")
    k_max: int = setting(10, "PGD steps from epoch T′ on.")
    ramp_fraction: float = setting(5 / 6, "T′ as a fraction of the run's epochs (5/6, as the "
                                          "dynamic policy).")
    alpha_ratio: float = setting(0.25, "step size α as a multiple of ε (fixed across lessons).")
    random_start: bool = setting(True, "start every attack from a uniform point of the ball.")

    def __post_init__(self) -> None:
        if not 0 <= self.k_min <= self.k_max:
            raise ValueError(f"policy.k_min={self.k_min} and policy.k_max={self.k_max}: "
                             "accepted 0 <= k_min <= k_max")


@register_policy(CurriculumConfig)
class CurriculumAt(PgdAt):
    """The same K_t, α, ε for every sample of epoch t."""

    def __init__(self, config: CurriculumConfig, context: PolicyContext) -> None:
        super().__init__(config, context)
        self.ramp_epochs = config.ramp_fraction * context.epochs

    @property
    def steps(self) -> int:
        """K_t of the current epoch."""
        c = self.config
        return curriculum_steps(self.epoch, c.k_min, c.k_max, self.ramp_epochs)

    def epoch_metrics(self) -> dict[str, float | torch.Tensor]:
        return {"policy/curriculum_steps": float(self.steps)}
