"""The policy protocol, its context records and the policy registry.

A policy acts on the attack env (:class:`envs.attack_env.AttackEnv`) and learns from what
happened, one batch at a time::

    result = run_episode(env, policy, batch)        # act(obs, t, generator) at t = 0, 1, ...
    inputs = policy.target_inputs(result)           # typed inputs of the target's AT step
    out    = target.step(result, inputs)            # the target learns
    m      = policy.update(result, view, out, info) # the policy learns (or not)

* ``requirements()``: what the env must compute for this policy (observation extras,
  observe-after-step, differentiable mode, FOSC reference).
* ``act(obs, t, generator)`` is called before every env step ``t = 0, 1, ...``; at ``t = 0`` it
  must set the per-sample ``eps``, ``alpha``, ``budget`` (and may set ``init``); later calls may
  return stop flags or ``None`` (keep going). Policies read observations during the episode and
  the :class:`~envs.result.AttackResult` after it — never env attributes.
* ``target_inputs(result)`` returns the :class:`~targets.inputs.TargetInputs` for the target's
  step (per-sample β, weights, label smoothing, whether to take the look-ahead ŵ).
* ``update(result, view, out, info)`` is called after the target's step on every batch, with a
  read-only :class:`~targets.target.TargetView`, the step's output (its per-sample loss, and ŵ
  when asked for) and :class:`StepInfo`; the policy decides itself whether it learns now.
* ``describe(result)`` returns per-sample statistics (tensors (N,)) that the runner accumulates
  into per-epoch distributions in MLflow; ``grids()`` names the categorical ones.
* ``state_dict`` / ``load_state_dict`` (from ``nn.Module``) plus ``extra_state`` /
  ``load_extra_state`` (optimiser states, counters, memories, per-epoch accumulators) make
  policies resumable, also in the middle of an epoch: the runner calls ``begin_epoch`` and then
  restores both.
* Presets live in the config: a field left ``None`` (or ``auto``) is filled by the config
  class's :meth:`PolicyConfig.resolve`, which the runner calls once when it builds the run;
  the policy is built from the resolved config, which the run logs.

Adding a policy: one file in ``agents/`` (or a package for a learned method) with a frozen
config dataclass (``name`` field = the registry id) and a class decorated with
:func:`register_policy`, plus one import line in ``agents/catalog.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from learned_at.envs.attack_env import AttackAction, Obs
from learned_at.envs.attack_loss import AttackLoss
from learned_at.envs.geometry.base import Geometry
from learned_at.envs.options import setting
from learned_at.envs.registry import Registry
from learned_at.envs.requirements import EnvRequirements
from learned_at.envs.result import AttackResult
from learned_at.targets.inputs import TargetInputs
from learned_at.targets.losses.base import ATLossOutput
from learned_at.targets.target import TargetView


@dataclass(frozen=True)
class PolicyContext:
    """What a policy may know about the run when it is built.

    Attributes:
        geometry: the threat geometry.
        eps: the run's nominal budget, in the geometry's unit.
        image_shape: (C, H, W).
        num_classes: K.
        num_train: size of the training split (for per-sample memory indexed by data-set index).
        epochs: total epochs of the run.
        batches_per_epoch: training batches per epoch.
        device: where the target and the data live.
        attack_loss: the objective the target's AT loss wants the attack to maximise.
        data: data set name (presets may depend on it).
        at_loss_name: registry id of the run's AT loss (``ce``, ``trades``, ``awp``, ...).
    """

    geometry: Geometry
    eps: float
    image_shape: tuple[int, int, int]
    num_classes: int
    num_train: int
    epochs: int
    batches_per_epoch: int
    device: torch.device
    attack_loss: AttackLoss = AttackLoss.CE
    data: str = "digits"
    at_loss_name: str = "ce"

    @property
    def preset(self) -> PresetContext:
        """The part of the context that presets depend on."""
        return PresetContext(self.geometry, self.eps, self.data, self.at_loss_name,
                             self.image_shape)


@dataclass(frozen=True)
class PresetContext:
    """What a policy's presets may depend on: the run's setting, before anything is built.

    Attributes:
        geometry: the threat geometry.
        eps: the run's nominal budget, in the geometry's unit.
        data: data set name.
        at_loss_name: registry id of the run's AT loss.
        image_shape: (C, H, W).
    """

    geometry: Geometry
    eps: float
    data: str
    at_loss_name: str
    image_shape: tuple[int, int, int]


@dataclass(frozen=True)
class StepInfo:
    """Where the run is when a policy updates.

    Attributes:
        step: global batch counter since the start of training (0-based).
        epoch: current epoch (0-based).
        generator: the policy's random generator.
    """

    step: int
    epoch: int
    generator: torch.Generator | None = None


class Policy(nn.Module):
    """Base class: a policy with no learnable behaviour. Subclasses override ``act``.

    Attributes:
        env_requirements: what the env must compute for this policy class (instances may
            refine it in :meth:`requirements`).
        not_data_parallel: empty if the policy may run in a torchrun job (each rank acts on
            its slice of the global batch; learned state is kept equal on every rank through
            :mod:`targets.distributed`), else why it may not (the run is refused with it).
    """

    name: ClassVar[str] = "base"
    env_requirements: ClassVar[EnvRequirements] = EnvRequirements()
    not_data_parallel: ClassVar[str] = ""

    def __init__(self, config: Any, context: PolicyContext) -> None:
        super().__init__()
        #: the config with its presets filled (:meth:`PolicyConfig.resolve`)
        self.config = config.resolve(context.preset) if hasattr(config, "resolve") else config
        self.context = context
        self.epoch = 0

    def requirements(self) -> EnvRequirements:
        """What the env must compute for this policy (see :class:`EnvRequirements`)."""
        return self.env_requirements

    def begin_epoch(self, epoch: int) -> None:
        """Called by the runner at the start of each epoch (0-based)."""
        self.epoch = epoch

    def act(self, obs: Obs, t: int, generator: torch.Generator | None) -> AttackAction | None:
        """Choose per-sample attack settings (t = 0) or per-step changes (t > 0)."""
        raise NotImplementedError

    def target_inputs(self, result: AttackResult) -> TargetInputs:
        """What the target's AT step needs from this policy for the batch just attacked."""
        return TargetInputs()

    def update(self, result: AttackResult, view: TargetView, out: ATLossOutput,
               info: StepInfo) -> dict[str, torch.Tensor]:
        """Learn from one batch; returns metrics (0-dim tensors, keys ``policy/...``)."""
        return {}

    def describe(self, result: AttackResult) -> dict[str, torch.Tensor]:
        """Per-sample statistics of the finished attack, each (N,), for distribution tracking.

        The default reports the budget and the iterations actually used; subclasses add theirs.
        """
        return {"eps": result.eps, "steps": result.steps.to(result.eps.dtype)}

    def epoch_metrics(self) -> dict[str, float | torch.Tensor]:
        """Scalars logged once per epoch (e.g. a schedule's current threshold)."""
        return {}

    def grids(self) -> dict[str, list[float]]:
        """Categorical keys of ``describe`` and the values they can take (for tables)."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Non-parameter state to checkpoint (optimiser states, counters, memories, and the
        per-epoch accumulators of :meth:`epoch_metrics`: a checkpoint may be written in the
        middle of an epoch, after :meth:`begin_epoch`, and resume from there exactly)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""


@dataclass(frozen=True)
class PolicyConfig:
    """Fields shared by every policy config.

    Class attributes (not fields) say what a policy that is a whole method brings along:

    * ``default_at_loss``: the AT loss its option selects (``policy=fast_ls_l0`` composes
      ``at_loss=trades``); ``at_loss=`` on the command line still wins.
    * ``soft_labels``: the preset of ``at_loss.soft_labels.enabled`` with the policy's own AT
      loss (Fast-LS-ℓ0: on with sTRADES; ``at_loss=ce`` given by the user: off).
    * ``target_smoothing``: its ``true_class_prob`` field is also the label smoothing of the
      target's AT step (LAS-AT, FGSM-SDI, FGSM-PGI): it and ``at_loss.true_class_prob`` are
      one setting (runners/presets.py).
    * ``follows_smoothing``: fields whose ``None`` means "the target step's label smoothing";
      runners/presets.py fills them with it once that is settled (LAS-AT's
      ``lookahead_true_class_prob``).
    """

    name: str = setting("none", "registry id of the policy")
    default_at_loss: ClassVar[str | None] = None
    soft_labels: ClassVar[bool] = False
    target_smoothing: ClassVar[bool] = False
    follows_smoothing: ClassVar[tuple[str, ...]] = ()

    def resolve(self, preset: PresetContext) -> PolicyConfig:
        """This config with every preset field (``None``, ``auto``) filled for the run's
        setting; the default has no presets. The policy is built from the result."""
        return self


POLICIES: Registry[PolicyConfig, Policy] = Registry("policy", "learned_at.agents.catalog")


def register_policy(config_cls: type[PolicyConfig]) -> Callable[[type[Policy]], type[Policy]]:
    """Class decorator: register a policy class under ``config_cls().name``."""
    return POLICIES.register(config_cls)


def policy_registry() -> dict[str, tuple[type[PolicyConfig], type[Policy]]]:
    """All registered policies: id -> (config class, policy class). Imports the built-ins."""
    return POLICIES.entries()


def make_policy(config: PolicyConfig | Any, context: PolicyContext) -> Policy:
    """Build the policy named by ``config.name`` (its presets are resolved when it is built:
    :meth:`PolicyConfig.resolve`); unknown ids list the valid ones."""
    registry = policy_registry()
    name = config.name
    if name not in registry:
        raise ValueError(f"unknown policy {name!r}; valid: {', '.join(sorted(registry))}")
    return registry[name][1](config, context)
