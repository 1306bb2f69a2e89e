"""The policy protocol, its context objects and the policy registry.

A policy acts on :class:`envs.attack_env.AttackEnv`:

* ``act(obs, t, generator)`` is called before every env step ``t = 0, 1, ...``; at ``t = 0`` it
  must set the per-sample ``eps``, ``alpha``, ``budget`` (and may set ``init``); later calls may
  return stop flags or ``None`` (keep going).
* ``update(batch)`` is called by the runner after the target's AT step on every batch; the
  policy decides itself whether this batch triggers learning (e.g. every k batches).
* ``describe(env)`` returns per-sample statistics (tensors (N,)) that the runner accumulates
  into per-epoch distributions in MLflow.
* ``state_dict`` / ``load_state_dict`` (from ``nn.Module``; learned policies extend them with
  their optimiser state) make policies resumable.

Adding a policy: one file in ``agents/`` with a frozen config dataclass (``name`` field = the
registry id) and a class decorated with :func:`register_policy`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from envs.attack_env import AttackAction, AttackEnv, Obs
from envs.attack_loss import AttackLoss
from envs.threat import ThreatModel


@dataclass(frozen=True)
class PolicyContext:
    """What a policy may know about the run when it is built.

    Attributes:
        threat: the threat model's geometry.
        eps: the run's nominal budget (``threat.eps``), in [0, 1] pixel units (L∞) or L2 units.
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

    threat: ThreatModel
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


@dataclass
class UpdateBatch:
    """Everything a learning policy may need after the target's AT step on one batch.

    Shape:
        x, x_adv: (N, C, H, W); y, index: (N,).
    Attributes:
        env: the env, still holding the batch's final attack state (steps, eps, ...).
        model: the target (already updated on this batch). Policies must not change it.
        target_step: the runner's :class:`targets.target_step.TargetStep` (loss, optimiser).
        batch_idx: global batch counter since the start of training.
        epoch: current epoch (0-based).
        generator: the policy's random generator.
        augmentation: (crop offsets (N, 2), flipped (N,)) when the loader augmented the batch
            (see targets/loader.py ``apply_augmentation``), else (None, None).
        at_output: the target step's :class:`targets.at_loss.ATLossOutput` on this batch
            (per-sample loss on x_adv before the update, logits), when the runner passes it.
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    x_adv: torch.Tensor
    env: AttackEnv
    model: nn.Module
    target_step: Any
    batch_idx: int
    epoch: int
    generator: torch.Generator | None = None
    augmentation: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
    at_output: Any = None


class Policy(nn.Module):
    """Base class: a policy with no learnable behaviour. Subclasses override ``act``.

    Class attributes describe what the env must provide for this policy.
    """

    name: ClassVar[str] = "base"
    #: observation extras the env must compute at reset (e.g. {"clean_grad_sign"}).
    extras: ClassVar[frozenset[str]] = frozenset()
    #: evaluate each new iterate right after its update (policies that decide per step).
    observe_after_step: ClassVar[bool] = False
    #: keep the autograd graph from the action to the final example.
    differentiable: ClassVar[bool] = False
    #: with observe_after_step: also evaluate the final iterate of samples that used up their
    #: budget (EnvConfig.observe_final). Instances may override it from their config.
    observe_final: bool = False
    #: x⁰ of the env's FOSC value, "natural" or "start" (EnvConfig.fosc_reference).
    fosc_reference: str = "natural"

    def __init__(self, config: Any, context: PolicyContext) -> None:
        super().__init__()
        self.config = config
        self.context = context
        self.epoch = 0

    def begin_epoch(self, epoch: int) -> None:
        """Called by the runner at the start of each epoch (0-based)."""
        self.epoch = epoch

    def act(self, obs: Obs, t: int, generator: torch.Generator | None) -> AttackAction | None:
        """Choose per-sample attack settings (t = 0) or per-step changes (t > 0)."""
        raise NotImplementedError

    def update(self, batch: UpdateBatch) -> dict[str, torch.Tensor]:
        """Learn from one batch; returns metrics (0-dim tensors, keys ``policy/...``)."""
        return {}

    def describe(self, env: AttackEnv) -> dict[str, torch.Tensor]:
        """Per-sample statistics of the finished attack, each (N,), for distribution tracking.

        The default reports the budget and the iterations actually used; subclasses add theirs.
        """
        return {"eps": env.eps, "steps": env.steps.to(env.eps.dtype)}

    def epoch_metrics(self) -> dict[str, float | torch.Tensor]:
        """Scalars logged once per epoch (e.g. a schedule's current threshold)."""
        return {}

    def target_extras(self, env: AttackEnv, batch: Any) -> dict[str, torch.Tensor]:
        """Per-sample inputs the target's AT loss needs from the policy (e.g. a β per sample)."""
        return {}

    def grids(self) -> dict[str, list[float]]:
        """Categorical keys of ``describe`` and the values they can take (for tables)."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Non-parameter state to checkpoint (optimiser states, counters, memories)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""


@dataclass(frozen=True)
class PolicyConfig:
    """Fields shared by every policy config.

    Attributes:
        name: registry id of the policy (selects the class).
    """

    name: str = "none"


_POLICIES: dict[str, tuple[type[PolicyConfig], type[Policy]]] = {}


def register_policy(config_cls: type[PolicyConfig]) -> Callable[[type[Policy]], type[Policy]]:
    """Class decorator: register ``policy_cls`` under ``config_cls().name``."""

    def wrap(policy_cls: type[Policy]) -> type[Policy]:
        key = config_cls().name
        if key in _POLICIES:
            raise ValueError(f"policy {key!r} registered twice")
        policy_cls.name = key
        _POLICIES[key] = (config_cls, policy_cls)
        return policy_cls

    return wrap


def policy_registry() -> dict[str, tuple[type[PolicyConfig], type[Policy]]]:
    """All registered policies: id -> (config class, policy class). Imports the built-ins."""
    import agents.catalog  # noqa: F401  (registers the built-in policies)

    return dict(_POLICIES)


def make_policy(config: PolicyConfig | Any, context: PolicyContext) -> Policy:
    """Build the policy named by ``config.name``; unknown ids list the valid ones."""
    registry = policy_registry()
    name = config.name
    if name not in registry:
        raise ValueError(f"unknown policy {name!r}; valid: {', '.join(sorted(registry))}")
    return registry[name][1](config, context)
