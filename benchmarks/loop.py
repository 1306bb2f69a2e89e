"""The co-training loop without MLflow, for benchmarks that drive their runs themselves.

A run is built once (:func:`runners.run.build_run`, a frozen :class:`~runners.run.Run`); the
loop's position -- the global batch counter :func:`runners.train.train_step` takes -- belongs
to the caller. :class:`Stepper` keeps it beside the run, so that a benchmark that interleaves
several runs (one batch or one epoch of each in turn) passes every run its own count, as the
runner's loop (:func:`runners.train.train`) does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from learned_at.runners.compose import compose_config
from learned_at.runners.epoch_progress import EpochProgress
from learned_at.runners.run import Run, build_run
from learned_at.runners.train import NonFiniteError, train_step
from learned_at.targets.datasets import DataSet
from learned_at.targets.loader import Batch

__all__ = ["Stepper", "make_run", "train_epoch"]


def make_run(overrides: Sequence[str], data: DataSet | None = None) -> Run:
    """The run of ``overrides`` (composed and checked like the command line's), no MLflow."""
    return build_run(compose_config(overrides), overrides, data=data)


@dataclass
class Stepper:
    """A run and its global batch counter (0-based: the next batch's step).

    Attributes:
        run: the run (its target, policy and distributions change as it trains).
        step: batches trained so far.
    """

    run: Run
    step: int = 0

    def train_step(self, batch: Batch, epoch: int
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """:func:`runners.train.train_step` at this run's step; advances it."""
        out = train_step(self.run, batch, epoch, self.step)
        self.step += 1
        return out

    def train_epoch(self, epoch: int) -> dict[str, torch.Tensor]:
        """:func:`train_epoch` from this run's step; advances it."""
        means, self.step = train_epoch(self.run, epoch, self.step)
        return means


def train_epoch(run: Run, epoch: int, step: int = 0) -> tuple[dict[str, torch.Tensor], int]:
    """One pass over ``run.loader`` as the runner's loop trains it: the policy's
    ``begin_epoch``, then :func:`runners.train.train_step` per batch from global step ``step``,
    the epoch's running sums on the device (no host sync per batch), one non-finite check at
    the end. No evaluation, checkpoint or tracking.

    Returns:
        (the epoch's means of the training scalars and policy metrics as device tensors,
        the global step after the epoch).

    Raises:
        NonFiniteError: NaN or ±inf in a batch's loss or policy metric.
    """
    progress = EpochProgress(epoch, step, run.generators.data.get_state())
    run.policy.begin_epoch(epoch)
    for batch in run.loader:
        stats, policy_metrics = train_step(run, batch, epoch, step)
        step += 1
        progress.add(stats, policy_metrics)
    if progress.bad is not None and bool(progress.bad):
        assert progress.good is not None  # set with bad
        raise NonFiniteError(f"non-finite loss or policy value (NaN/inf) at epoch {epoch + 1}, "
                             f"batch {int(progress.good) + 1}")
    return {**progress.stats.means(), **progress.policy_metrics.means()}, step
