"""Sparse adversarial training (sAT / sTRADES; Zhong, Huang & Liu, ICML 2024) and its 1-step
form Fast-LS-ℓ0 (Zhong, Huang & Liu, NeurIPS 2025): sPGD-AT policies for ``threat=l0``.

``policy=spgd_at``: every sample is attacked by sPGD (the L0 geometry's step,
:mod:`envs.geometry.l0`) from sPGD's random start: ``steps`` iterations (20, the reference's
``--n_iters``), magnitude step α = 0.25, a random projected/unprojected gradient mode per sample
and episode, patience 10 (``threat.patience``); a sample stops at its first misclassified
iterate (``early_stop``, the reference drops fooled samples). ``policy.examples=reference`` is
the rest of the reference's training attack (sPGD@6624853 ``adversarial_training/spgd.py``):
only the samples the model classifies correctly are attacked (the others train on the clean
image; every sample is attacked when none is correct), and a sample the attack does not fool
trains on its highest-loss iterate if that loss is at least its clean loss, else on the clean
image (:attr:`envs.requirements.EnvRequirements.keep_best`; one clean forward pass and one
evaluation of the final iterate more per sample). The default, ``last``, attacks every sample
and trains on its last iterate. The training budget is
``policy.k`` pixels (None: ``threat.k``; the reference trains at k = 120 and evaluates at 20,
docs/references.md §6.3). The AT loss is the run's: ``at_loss=ce`` is sAT, ``at_loss=trades``
sTRADES (β = 3 and a CE attack under L0), ``at_loss=tradeoff`` the trade-off loss; any of them
takes ``at_loss.soft_labels.enabled=true``.

N-FGSM-style noise (``policy.noise``, de Jorge et al. 2022): N-FGSM starts from noise larger
than the budget and does not project back onto it. Its L0 form here adds ⌊noise·k⌉ random
pixels to the start and to the training budget: the random start covers k + ⌊noise·k⌉ pixels
(U(−1, 1) magnitudes) and the example may keep all of them. How the Fast-LS-ℓ0 paper adapts
N-FGSM to L0 is not in the material read (docs/references.md §6.5); this is the form that keeps both
of N-FGSM's ingredients in the L0 unit of size (pixels).

``policy=fast_ls_l0`` is the whole Fast-LS-ℓ0 recipe in one switch (docs/references.md §8: its
63.0 % sAA equals Table 3's "1-step sTRADES + SAT & N-FGSM"): 1-step sPGD with N-FGSM noise 2
(N-FGSM's noise-to-step ratio), and, unless the command line picks ``at_loss`` itself, the policy's
default AT loss ``at_loss=trades at_loss.soft_labels.enabled=true`` (sTRADES with
Self-Adaptive Training soft labels), applied by the config composer
(:attr:`agents.base.PolicyConfig.default_at_loss`, ``soft_labels``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import ClassVar

import torch

from learned_at.agents.base import (Policy, PolicyConfig, PolicyContext, PresetContext,
                                   register_policy)
from learned_at.agents.fixed import uniform_action
from learned_at.envs.attack_env import AttackAction, Obs
from learned_at.envs.geometry.base import BudgetUnit
from learned_at.envs.options import setting, COUNT, NON_NEGATIVE, POSITIVE, Limit, parse_option
from learned_at.envs.requirements import EnvRequirements, Extra
from learned_at.envs.result import AttackResult


class Examples(str, Enum):
    """Which samples are attacked and which iterate each trains on (module docstring)."""

    last = "last"
    reference = "reference"


@dataclass(frozen=True)
class SpgdAtConfig(PolicyConfig):
    """sPGD adversarial training (``threat=l0``)."""

    limits: ClassVar[dict[str, Limit]] = {"steps": COUNT, "k": COUNT, "noise": NON_NEGATIVE,
                                          "alpha_ratio": POSITIVE}

    name: str = setting("spgd_at", "registry id.")
    steps: int = setting(20, "sPGD iterations per sample (reference 20; 1 = the fast form).")
    k: int | None = setting(None, "training budget in pixels; None = threat.k (the evaluation "
                                  "budget).")
    noise: float = setting(0.0, "N-FGSM-style noise: ⌊noise·k⌉ extra random pixels in the start "
                                "and the budget (0 = off).")
    alpha_ratio: float = setting(0.25, "magnitude step as a fraction of the magnitude bound 1 "
                                       "(sPGD 0.25).")
    early_stop: bool = setting(True, "stop a sample at its first misclassified iterate "
                                     "(reference).")
    examples: Examples = setting(Examples.last, "last (every sample attacked, its last iterate) "
                                                "or reference (only correctly classified "
                                                "samples attacked; an unfooled sample keeps its "
                                                "highest-loss iterate if it beats the clean "
                                                "loss, else the clean image).")

    def resolve(self, preset: PresetContext) -> SpgdAtConfig:
        """``k`` = the run's budget (``threat.k``) when it is None."""
        return self if self.k is not None else replace(self, k=int(preset.eps))


@register_policy(SpgdAtConfig)
class SpgdAt(Policy):
    """sPGD from sPGD's random start with the same budget, steps and α for every sample."""

    def __init__(self, config: SpgdAtConfig, context: PolicyContext) -> None:
        super().__init__(config, context)
        config = self.config  # resolved: its presets filled
        if context.geometry.budget_unit is not BudgetUnit.pixels:
            raise ValueError(f"policy={config.name} is sparse (L0) adversarial training: it "
                             f"needs threat=l0 (got threat={context.geometry.name})")
        k = float(context.eps if config.k is None else config.k)
        self.budget = k + round(config.noise * k)
        self.reference = parse_option(Examples, config.examples,
                                      "policy.examples") is Examples.reference
        pixels = context.image_shape[-2] * context.image_shape[-1]
        if self.budget > pixels:
            raise ValueError(f"policy.k + policy.noise·k = {self.budget:g} pixels exceeds the "
                             f"{pixels} pixels of {tuple(context.image_shape)} images")

    def requirements(self) -> EnvRequirements:
        """Observe each new iterate when samples stop at their first success; with
        ``examples=reference`` the clean logits and the best iterate too."""
        if self.reference:
            return EnvRequirements(extras=frozenset({Extra.clean_logits}), keep_best=True)
        return EnvRequirements(observe_after_step=self.config.early_stop and self.config.steps > 1)

    def act(self, obs: Obs, t: int, generator: torch.Generator | None) -> AttackAction | None:
        if t:  # obs["correct"] is the newest iterate's (observe_after_step)
            return AttackAction(stop=~obs["correct"]) if self.config.early_stop else None
        geometry = self.context.geometry
        init = geometry.random_delta(obs["x"], self.budget, generator)
        alpha = geometry.step_size(self.budget, self.config.alpha_ratio)
        action = uniform_action(obs, self.budget, alpha, self.config.steps, init)
        if not self.reference:
            return action
        correct = obs["clean_logits"].argmax(1) == obs["y"]
        attacked = correct | ~correct.any()  # the reference attacks all when none is correct
        assert action.budget is not None
        return replace(action, budget=action.budget * attacked,
                       init=init * attacked.view(-1, *[1] * (init.dim() - 1)))

    def describe(self, result: AttackResult) -> dict[str, torch.Tensor]:
        """Budget, steps taken and the changed pixels of each final example."""
        dtype = result.eps.dtype
        return {"eps": result.eps, "steps": result.steps.to(dtype),
                "pixels": self.context.geometry.size(result.delta).to(dtype)}


@dataclass(frozen=True)
class FastLsL0Config(SpgdAtConfig):
    """Fast-LS-ℓ0: 1-step sPGD with N-FGSM noise; its default AT loss is sTRADES with soft labels."""

    name: str = setting("fast_ls_l0", "registry id.")
    steps: int = setting(1, "sPGD iterations (1).")
    noise: float = setting(2.0, "N-FGSM-style noise (2: N-FGSM's default noise-to-step ratio).")
    early_stop: bool = setting(False, "unused with one step.")
    default_at_loss: ClassVar[str | None] = "trades"
    soft_labels: ClassVar[bool] = True


@register_policy(FastLsL0Config)
class FastLsL0(SpgdAt):
    """sPGD-AT with the Fast-LS-ℓ0 preset (a separate id so runs and ablations read clearly)."""
