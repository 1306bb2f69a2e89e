"""Self-Adaptive Training soft labels (Huang, Zhang & Zhang, NeurIPS 2020) as an AT-loss option.

Every training sample i keeps a soft target tᵢ (K,), stored by data-set index: one-hot before
its first update, then after ``warmup_epochs``, each time the sample is trained on,

    tᵢ ← m·tᵢ + (1 − m)·softmax(f(xᵢ))      (m = ``momentum`` = 0.9),

and the loss's cross-entropy terms use tᵢ in place of the label, weighted per sample by
wᵢ = maxⱼ tᵢⱼ normalised to mean 1 over the batch (SAT's reference, LayneH/self-adaptive-training
``losses/trades.py``: the prediction is the clean one, ``source=clean``; ``source=adversarial``
uses the prediction on the training example). Before the warm-up ends the loss is unchanged.
Fast-LS-ℓ0 combines these soft labels with sTRADES (docs/references.md §6.5, §8); the option works
with ``at_loss=ce`` (sAT), ``trades`` (sTRADES), ``tradeoff`` and ``awp``.

The update of the stored targets is *committed* only by the target's own step
(:meth:`targets.target.Target.step` calls :meth:`SoftLabels.end_step`): a look-ahead ŵ or a
policy that evaluates the loss reads the targets but never moves them. The epoch comes from the
number of committed steps, so a resumed run (the memory and the counter are checkpointed with
the loss) continues exactly.

Defaults: ``warmup_epochs`` = None takes 70 % of the run (SAT's TRADES setting, 70 of 100
epochs); Fast-LS-ℓ0's own warm-up is not published in the material read (§6.5).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from learned_at.envs.options import setting, MOMENTUM, NON_NEGATIVE_INT, Limit, parse_option
from learned_at.targets.distributed import all_gather_cat, all_reduce_mean


class SoftLabelSource(str, Enum):
    """Which prediction updates the soft targets."""

    clean = "clean"              # f(x) (SAT's TRADES reference)
    adversarial = "adversarial"  # f(x_adv), the example the loss trains on


@dataclass(frozen=True)
class SoftLabelConfig:
    """Self-Adaptive Training soft labels (``at_loss.soft_labels.enabled=true``)."""

    limits: ClassVar[dict[str, Limit]] = {"momentum": MOMENTUM,
                                          "warmup_epochs": NON_NEGATIVE_INT}

    enabled: bool | None = setting(None, "replace the labels of the loss's CE terms by per-sample "
                                         "soft targets; None = the policy's preset "
                                         "(policy=fast_ls_l0: on), else off.")
    momentum: float = setting(0.9, "m of tᵢ ← m·tᵢ + (1 − m)·p (SAT 0.9).")
    warmup_epochs: int | None = setting(None, "epochs with plain labels before the first update; "
                                              "None = 70 % of the run (SAT's TRADES setting).")
    source: SoftLabelSource = setting(SoftLabelSource.clean, "the prediction p: clean (SAT's "
                                                             "reference) or adversarial.")

    def resolve(self, epochs: int) -> SoftLabelConfig:
        """``warmup_epochs`` = 70 % of a run of ``epochs`` epochs (rounded) when None;
        ``enabled`` None (the policy's preset) stays for the runner to decide."""
        if self.warmup_epochs is not None:
            return self
        return replace(self, warmup_epochs=round(0.7 * epochs))

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", parse_option(SoftLabelSource, self.source,
                                                        "at_loss.soft_labels.source"))


class SoftLabels:
    """The per-sample soft targets of one run (module docstring).

    Args:
        config: the option's settings.
        num_train: training-set size (indices are data-set indices in [0, num_train)).
        num_classes: K.
        epochs: the run's epochs (for the default warm-up).
        batches_per_epoch: target steps per epoch (the epoch is steps // batches_per_epoch).
        device: where the memory lives.
    """

    def __init__(self, config: SoftLabelConfig, num_train: int, num_classes: int, epochs: int,
                 batches_per_epoch: int, device: torch.device) -> None:
        if num_train <= 0 or num_classes <= 0:
            raise ValueError("at_loss.soft_labels needs the training-set size and the number of "
                             "classes: build the loss with make_at_loss(config, LossContext(...))")
        self.config = config
        warmup_epochs = config.resolve(epochs).warmup_epochs
        assert warmup_epochs is not None  # resolve() fills the default
        warmup = int(warmup_epochs)
        self.warmup_steps = warmup * max(batches_per_epoch, 1)
        self.memory = torch.zeros(num_train, num_classes, device=device)  # (num_train, K)
        self.seen = torch.zeros(num_train, dtype=torch.bool, device=device)
        self.steps = 0  # committed target steps (host counter)
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def active(self) -> bool:
        """Whether the warm-up is over (the soft targets are in use)."""
        return self.steps >= self.warmup_steps

    def targets(self, index: torch.Tensor, y: torch.Tensor, logits: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Updated soft targets and weights of a batch (the update is held until
        :meth:`end_step`).

        Shape:
            index, y: (N,) int64; logits: (N, K) the source prediction (detached here).
            Returns t (N, K) summing to 1 and w (N,) with mean 1.
        """
        prob = F.softmax(logits.detach().float(), dim=1)
        onehot = F.one_hot(y, prob.shape[1]).to(prob.dtype)
        prev = torch.where(self.seen[index].view(-1, 1), self.memory[index], onehot)
        t = self.config.momentum * prev + (1 - self.config.momentum) * prob
        w = t.amax(1)
        self._pending = (index, t)
        return t, w / all_reduce_mean(w.mean())  # torchrun: the global batch's mean

    def end_step(self) -> None:
        """Commit the last batch's targets (called once per target step)."""
        if self._pending is not None and self.active:
            index, t = self._pending
            # torchrun: every rank writes the whole global batch's rows (a sample's slice
            # changes rank between epochs; rank 0's checkpoint holds the memory whole)
            index, t = all_gather_cat(index), all_gather_cat(t)
            self.memory.index_copy_(0, index, t.to(self.memory.dtype))
            self.seen.index_fill_(0, index, True)
        self._pending = None
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        """Memory, seen flags and the step counter (weights_only-loadable)."""
        return {"memory": self.memory, "seen": self.seen, "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.memory.copy_(state["memory"])
        self.seen.copy_(state["seen"])
        self.steps = int(state["steps"])
        self._pending = None


def soft_target_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample −Σ t·log softmax(z). (N, K), (N, K) -> (N,)."""
    return -(targets * F.log_softmax(logits, 1)).sum(1)
