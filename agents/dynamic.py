"""Dynamic AT (Wang et al., ICML 2019): PGD that stops per sample on its FOSC value.

Each sample runs PGD (K = 10, α = ε/4, random start); the first step always runs; after each
step the env evaluates the new iterate (``observe_after_step``), and a sample stops as soon as
its First-Order Stationary Condition value is at most the epoch's threshold

    c_t = max(c_max − t·c_max/T′, 0),   t the 0-based epoch, T′ = ramp_fraction · epochs.

Stopped samples leave the env's forward/backward passes (active-set compaction), so an epoch's
time follows the passes actually used: a sample that stops after j steps costs j + 1 passes
(the gradient at its last iterate is paid to decide; the next step would have reused it), a
sample that runs all K steps costs K passes, plus one when ``final_fosc`` is on.

``c_max`` presets: FOSC grows with the input dimension and ε (ε‖g‖₁ sums over C·H·W pixels),
so the paper's 0.5 (CIFAR-10, ε = 8/255) does not transfer. :data:`C_MAX_PRESETS` holds, per
data set and threat, the *median FOSC after the first PGD step over the first epoch* of a
full-K run from a fresh target (``python -m benchmarks.fosc_preset``; values and conditions in
the module docstring there): with it, about half of the samples stop after one step at the
start of training, and the threshold then decays linearly to 0 at T′. Presets exist for
digits (0.025) and MNIST (0.3) under L∞, and CIFAR-10 takes the paper's c_max = 0.5 (its
reference code's value, same per-sample gradient scale; not re-measured here); other data
sets/threats need ``policy.c_max``, and the error says so.

Departures from the reference code (dynamic_adv_training@470210e, see docs/references.md §4):
    * FOSC reference point x⁰ = the natural example (paper); ``fosc_reference=start`` gives
      the code's random start (FOSC may then be negative).
    * Stopped samples cost nothing (the code freezes but still computes them).
    * The code's loss re-weighting by each sample's adversarial CE (from epoch 1 on) is not in
      the paper; it is available as ``reweight=true``, off by default.
    * The gradient is that of the per-sample (summed) loss, as the code and its issue #1 need.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from learned_at.agents.base import (Policy, PolicyConfig, PolicyContext, PresetContext,
                                   register_policy)
from learned_at.agents.fixed import uniform_action
from learned_at.envs.attack_env import AttackAction, Obs
from learned_at.envs.attack_loss import AttackLoss
from learned_at.envs.options import setting, COUNT, NON_NEGATIVE, POSITIVE, Limit, parse_option
from learned_at.envs.requirements import EnvRequirements, FoscReference
from learned_at.envs.result import AttackResult
from learned_at.targets.inputs import TargetInputs

#: (data set, norm) -> c_max: the median first-epoch FOSC after step 1 (benchmarks/fosc_preset).
C_MAX_PRESETS: dict[tuple[str, str], float] = {
    ("digits", "linf"): 0.025,
    ("mnist", "linf"): 0.3,
    ("cifar10", "linf"): 0.5,  # the paper's own value (docs/references.md §4.1, §8), not measured
}


def fosc_threshold(epoch: int, c_max: float, ramp_epochs: float) -> float:
    """The paper's schedule c_t = max(c_max − t·c_max/T′, 0) for 0-based epoch t, T′ > 0."""
    return max(c_max - epoch * c_max / ramp_epochs, 0.0)


@dataclass(frozen=True)
class DynamicConfig(PolicyConfig):
    """Dynamic AT: per-sample FOSC stopping with a threshold decreasing over training."""

    limits: ClassVar[dict[str, Limit]] = {
        "steps": COUNT, "alpha_ratio": NON_NEGATIVE, "c_max": NON_NEGATIVE,
        "ramp_fraction": POSITIVE}

    name: str = "dynamic"
    steps: int = setting(10, "iteration budget K per sample.")
    alpha_ratio: float = setting(0.25, "step size α as a multiple of ε.")
    random_start: bool = setting(True, "start from a uniform point of the ball (paper and code: "
                                       "yes).")
    c_max: float | None = setting(None, "threshold at epoch 0; None = the data set's preset "
                                        "(:data:`C_MAX_PRESETS`).")
    ramp_fraction: float = setting(5 / 6, "T′ as a fraction of the run's epochs (paper: 100 of "
                                          "120 = 5/6); the threshold is 0 from epoch T′ on.")
    fosc_reference: FoscReference = setting(FoscReference.natural, "x⁰ of FOSC: natural (paper) "
                                                                   "or start (reference code).")
    final_fosc: bool = setting(True, "evaluate the final iterate of samples that used all K "
                                     "steps, so the tracked FOSC is that of every final training "
                                     "example (costs one pass for each such sample); off: those "
                                     "samples report the FOSC of their iterate K−1.")
    reweight: bool = setting(False, "weight each sample's training CE by its (detached) "
                                    "adversarial CE from epoch 1 on, as the reference code does "
                                    "(not in the paper; off by default). The weight is the env's "
                                    "attack loss at the final example, so it needs final_fosc and "
                                    "a CE attack (at_loss=ce, awp or pgi; every built-in AT loss "
                                    "honours the weights).")

    def resolve(self, preset: PresetContext) -> DynamicConfig:
        """``c_max`` from :data:`C_MAX_PRESETS` (data set, threat) when it is None."""
        if self.c_max is not None or not preset.geometry.has_fosc:
            return self  # (the policy refuses a geometry without FOSC when it is built)
        key = (preset.data, preset.geometry.name)
        if key not in C_MAX_PRESETS:
            known = ", ".join(f"{d}/{n}" for d, n in C_MAX_PRESETS)
            raise ValueError(f"no c_max preset for data={key[0]} threat={key[1]} (presets: "
                             f"{known}); set policy.c_max=<value> (measure it with "
                             "python -m benchmarks.fosc_preset)")
        return replace(self, c_max=C_MAX_PRESETS[key])


@register_policy(DynamicConfig)
class DynamicAt(Policy):
    """Stops each sample's PGD once its FOSC value is at most the epoch's threshold."""

    def __init__(self, config: DynamicConfig, context: PolicyContext) -> None:
        super().__init__(config, context)
        config = self.config  # resolved: its presets filled
        self.fosc_reference = parse_option(FoscReference, config.fosc_reference,
                                           "policy.fosc_reference")
        if not context.geometry.has_fosc:
            raise ValueError(f"policy=dynamic stops on FOSC, which threat="
                             f"{context.geometry.name} does not define; use another policy "
                             "(e.g. policy=pgd_at) or another threat")
        if config.reweight and not (config.final_fosc and context.attack_loss is AttackLoss.CE):
            raise ValueError("policy.reweight=true weights by the final example's adversarial "
                             "CE: it needs policy.final_fosc=true and a CE attack (at_loss=ce, "
                             "awp or pgi)")
        assert config.c_max is not None  # resolve() filled the preset (the geometry has FOSC)
        self.c_max = float(config.c_max)
        self.ramp_epochs = config.ramp_fraction * context.epochs

    @property
    def threshold(self) -> float:
        """c_t of the current epoch."""
        return fosc_threshold(self.epoch, self.c_max, self.ramp_epochs)

    def act(self, obs: Obs, t: int, generator: torch.Generator | None) -> AttackAction | None:
        if t == 0:
            eps = self.context.eps
            init = (self.context.geometry.random_delta(obs["x"], eps, generator)
                    if self.config.random_start else None)
            alpha = self.context.geometry.step_size(eps, self.config.alpha_ratio)
            return uniform_action(obs, eps, alpha, self.config.steps, init)
        # obs["fosc"] is the FOSC of each active sample's newest iterate (observe_after_step)
        return AttackAction(stop=obs["fosc"] <= self.threshold)

    def requirements(self) -> EnvRequirements:
        """FOSC of every new iterate (and of the final ones with ``final_fosc``)."""
        return EnvRequirements(observe_after_step=True, observe_final=self.config.final_fosc,
                               fosc_reference=self.fosc_reference)

    def describe(self, result: AttackResult) -> dict[str, torch.Tensor]:
        """Per-sample gradient steps, forward/backward passes and FOSC of the final example."""
        dtype = result.eps.dtype
        assert result.fosc is not None
        return {"steps": result.steps.to(dtype), "passes": result.passes.to(dtype),
                "fosc": result.fosc}

    def epoch_metrics(self) -> dict[str, float | torch.Tensor]:
        return {"policy/fosc_threshold": self.threshold}

    def target_inputs(self, result: AttackResult) -> TargetInputs:
        """With ``reweight`` from epoch 1 on: ``weight`` = adversarial CE per sample (N,) of the
        final example (the env's attack loss there, eval mode)."""
        if not self.config.reweight or self.epoch < 1:
            return TargetInputs()
        return TargetInputs(weight=result.loss.detach())
