"""The AT-loss protocol and its registry: how the target learns from one attack episode.

An AT loss reads what it needs from the episode's :class:`~envs.result.AttackResult` (the clean
batch, the examples, the start point, the first gradient, per-sample ε and α ...) and from the
policy's :class:`~targets.inputs.TargetInputs` (β, weights, smoothing), and returns the loss and
its parts; :meth:`ATLoss.train_step` turns it into one optimiser step (losses that perturb
weights, such as AWP, override it). A loss that needs more from the attack than the default
declares it in ``env_requirements`` (e.g. the first gradient): the runner builds the env from
the union of the policy's and the loss's requirements, so adding such a loss is one file.

Registry ids select them (``at_loss=ce``, ``at_loss=trades``, ...). :func:`make_at_loss` binds
the loss to the run (:class:`LossContext`: training-set size, classes, schedule, device,
geometry), which per-sample memories (soft labels, :mod:`targets.losses.soft_labels`) and
per-geometry defaults (:attr:`envs.geometry.base.Geometry.at_loss_defaults`, applied by
:meth:`ATLossConfig.resolve`) need. The target
calls :meth:`ATLoss.end_step` after each of its own optimiser steps (never after a look-ahead).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from contextlib import contextmanager
from typing import Any, Callable, ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from learned_at.envs.attack_loss import AttackLoss
from learned_at.envs.geometry.base import Geometry
from learned_at.envs.options import setting, PROBABILITY, Limit
from learned_at.envs.registry import Registry
from learned_at.envs.requirements import EnvRequirements
from learned_at.envs.result import AttackResult
from learned_at.targets.inputs import TargetInputs
from learned_at.targets.losses.soft_labels import SoftLabelConfig, SoftLabels, SoftLabelSource


def smoothed_targets(y: torch.Tensor, num_classes: int, true_class_prob: float) -> torch.Tensor:
    """Soft labels: ``true_class_prob`` on y, the rest spread evenly. (N,) -> (N, K).

    This is the reference repos' label smoothing (docs/references.md §0.2: LAS-AT 0.7, FGSM-SDI 0.5,
    FGSM-PGI 0.6); 1.0 gives one-hot targets.
    """
    off = (1.0 - true_class_prob) / max(num_classes - 1, 1)
    t = torch.full((y.shape[0], num_classes), off, device=y.device)
    return t.scatter_(1, y[:, None], true_class_prob)


def soft_cross_entropy(logits: torch.Tensor, y: torch.Tensor, true_class_prob: float = 1.0
                       ) -> torch.Tensor:
    """Per-sample −Σ t·log softmax(z) with smoothed targets t. (N, K), (N,) -> (N,)."""
    if true_class_prob == 1.0:
        return F.cross_entropy(logits, y, reduction="none")
    t = smoothed_targets(y, logits.shape[1], true_class_prob)
    return -(t * F.log_softmax(logits, 1)).sum(1)


def weighted_mean(per_sample: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """mean_i(w_i · ℓ_i), or mean_i ℓ_i without weights. (N,), (N,) | None -> ().

    Every built-in AT loss reduces its per-sample loss through this, so a policy's per-sample
    weights (:attr:`targets.inputs.TargetInputs.weight`, Dynamic AT's re-weighting) reach
    every loss the same way.
    """
    if weight is None:
        return per_sample.mean()
    return (per_sample * weight.to(per_sample.dtype)).mean()


@dataclass
class ATLossOutput:
    """Result of an AT loss (and of the target's step).

    Attributes:
        loss: 0-dim tensor with graph (what the optimiser minimises).
        parts: named detached 0-dim tensors (logged as ``train/<name>``).
        logits_adv: (N, K) detached logits on the adversarial batch.
        per_sample: (N,) detached per-sample loss (for rewards that need it).
        lookahead: the one-step look-ahead ŵ of the target (a read-only shadow module), when
            the policy asked for it (:attr:`targets.inputs.TargetInputs.lookahead`).
        logits_before: (N, K) eval-mode logits of the adversarial batch at the weights before
            the step, when the policy asked for them
            (:attr:`targets.inputs.TargetInputs.logits_before`).
    """

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    logits_adv: torch.Tensor
    per_sample: torch.Tensor
    lookahead: nn.Module | None = None
    logits_before: torch.Tensor | None = None


@dataclass(frozen=True)
class ATLossConfig:
    """Fields shared by every AT loss config."""

    limits: ClassVar[dict[str, Limit]] = {"true_class_prob": PROBABILITY}

    name: str = setting("ce", "registry id.")
    true_class_prob: float | None = setting(None, "label smoothing as the probability put on the "
                                                  "true class (1.0 = off); None = the policy's "
                                                  "(LAS-AT, FGSM-SDI, FGSM-PGI carry their "
                                                  "recipe's), else 1.0 (runners/presets.py makes "
                                                  "the two one setting).")
    soft_labels: SoftLabelConfig = setting(doc="Self-Adaptive Training soft labels "
                                               "(at_loss.soft_labels.enabled=true; losses that "
                                               "support them: ce, trades, tradeoff, awp).",
                                              factory=SoftLabelConfig)

    def resolve(self, geometry: Geometry, epochs: int) -> ATLossConfig:
        """Every preset field filled: the geometry's defaults for this loss
        (:attr:`envs.geometry.base.Geometry.at_loss_defaults`, e.g. L0's sTRADES β = 3) where
        a field is None, then the loss's own fallbacks (:attr:`fallbacks`), and the soft
        labels' warm-up for a run of ``epochs`` epochs. ``true_class_prob`` is the runner's
        business (it depends on the policy)."""
        defaults = {**self.fallbacks, **geometry.at_loss_defaults.get(self.name, {})}
        filled = {k: v for k, v in defaults.items() if getattr(self, k, 0) is None}
        return replace(self, **filled, soft_labels=self.soft_labels.resolve(epochs))

    #: field -> value for ``None`` fields the geometry leaves open (class attribute).
    fallbacks: ClassVar[dict[str, Any]] = {}


@dataclass(frozen=True)
class LossContext:
    """What an AT loss may know about the run (set by :func:`make_at_loss`).

    Attributes:
        num_train: training-set size (per-sample memories are indexed by data-set index).
        num_classes: K.
        epochs: the run's epochs.
        batches_per_epoch: target steps per epoch.
        device: where the target lives.
        geometry: the threat geometry (its per-loss defaults), None = none.
    """

    num_train: int = 0
    num_classes: int = 0
    epochs: int = 1
    batches_per_epoch: int = 1
    device: torch.device = torch.device("cpu")
    geometry: Any = None


class ATLoss:
    """Base AT loss: subclasses implement :meth:`compute` (see the module docstring)."""

    name: ClassVar[str] = "base"
    #: the objective the attack should maximise for this loss. This and ``env_requirements``
    #: are class defaults that an instance may replace from its config (TRADES in ``bind``).
    attack_loss: AttackLoss = AttackLoss.CE
    #: what the env must compute for this loss (merged with the policy's requirements).
    env_requirements: EnvRequirements = EnvRequirements()
    #: the loss's CE terms can take Self-Adaptive Training soft labels.
    supports_soft_labels: ClassVar[bool] = False

    def __init__(self, config: Any) -> None:
        self.config = config
        self.context = LossContext()
        self.soft_labels: SoftLabels | None = None
        self._smoothing: float | None = None  # set inside smoothing()

    def bind(self, context: LossContext) -> None:
        """Attach the run's context: the config's presets are resolved for its geometry
        (:meth:`ATLossConfig.resolve`) and the soft-label memory is built when the option is
        on."""
        self.context = context
        if context.geometry is not None and hasattr(self.config, "resolve"):
            self.config = self.config.resolve(context.geometry, context.epochs)
        option = getattr(self.config, "soft_labels", None)
        if option is None or not option.enabled:
            return
        if not self.supports_soft_labels:
            raise ValueError(f"at_loss={self.name} does not take soft labels; "
                             "at_loss.soft_labels applies to ce, trades, tradeoff and awp")
        self.soft_labels = SoftLabels(option, context.num_train, context.num_classes,
                                      context.epochs, context.batches_per_epoch, context.device)

    def soft_targets(self, model: nn.Module, result: AttackResult,
                     clean_logits: torch.Tensor | None, adv_logits: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """SAT soft targets (N, K) and weights (N,) of the batch once the warm-up is over, else
        None (the loss uses its labels). ``clean_logits`` None with ``source=clean`` costs one
        extra eval-mode forward of the clean batch without a graph."""
        sl = self.soft_labels
        if sl is None or not sl.active:
            return None
        if sl.config.source is SoftLabelSource.adversarial:
            logits = adv_logits
        elif clean_logits is not None:
            logits = clean_logits
        else:
            was = model.training
            model.eval()
            with torch.no_grad():
                logits = model(result.x)
            model.train(was)
        return sl.targets(result.index, result.y, logits)

    def end_step(self) -> None:
        """The target's step on this batch is done: commit per-sample memories."""
        if self.soft_labels is not None:
            self.soft_labels.end_step()

    @property
    def true_class_prob(self) -> float:
        """Label smoothing of the loss's CE terms (1.0 where the config leaves it None; inside
        :meth:`smoothing`, that block's value)."""
        value = self.config.true_class_prob if self._smoothing is None else self._smoothing
        return 1.0 if value is None else float(value)

    @contextmanager
    def smoothing(self, true_class_prob: float | None) -> Iterator[None]:
        """Within the block the CE terms smooth with ``true_class_prob`` (None: the config's)."""
        before = self._smoothing
        self._smoothing = true_class_prob
        try:
            yield
        finally:
            self._smoothing = before

    def compute(self, model: nn.Module, result: AttackResult, inputs: TargetInputs
                ) -> ATLossOutput:
        """Loss of ``model`` (in its current mode) on the episode's batch."""
        raise NotImplementedError

    def check_setting(self, policy: Any, geometry: Geometry) -> str | None:
        """A one-line problem (naming the fix) when this loss cannot train on the episodes of
        ``policy`` (its config: ``policy.name`` and fields) in ``geometry``, else None. The
        runner asks once, before training."""
        return None

    def train_step(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                   result: AttackResult, inputs: TargetInputs = TargetInputs()) -> ATLossOutput:
        """One optimiser step on the loss (model in train mode)."""
        model.train()
        out = self.compute(model, result, inputs)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        return out

    def state_dict(self) -> dict[str, Any]:
        """Extra state to checkpoint (the soft-label memory; subclasses add theirs)."""
        return {} if self.soft_labels is None else {"soft_labels": self.soft_labels.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        if self.soft_labels is not None and "soft_labels" in state:
            self.soft_labels.load_state_dict(state["soft_labels"])


AT_LOSSES: Registry[ATLossConfig, ATLoss] = Registry(
    "AT loss", "learned_at.targets.losses.catalog")


def register_at_loss(config_cls: type) -> Callable[[type[ATLoss]], type[ATLoss]]:
    """Class decorator registering an AT loss under ``config_cls().name``."""
    return AT_LOSSES.register(config_cls)


def at_loss_registry() -> dict[str, tuple[type, type[ATLoss]]]:
    """All AT losses: id -> (config class, loss class). Imports the built-in ones."""
    return AT_LOSSES.entries()


def make_at_loss(config: Any, context: LossContext | None = None) -> ATLoss:
    """Build the AT loss named by ``config.name`` and bind it to the run (``context``; None = a
    bare context without training-set size or geometry). Unknown ids list the valid ones."""
    registry = at_loss_registry()
    if config.name not in registry:
        raise ValueError(f"unknown at_loss {config.name!r}; valid: {', '.join(sorted(registry))}")
    loss = registry[config.name][1](config)
    loss.bind(context if context is not None else LossContext())
    return loss
