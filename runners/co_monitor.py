"""Catastrophic-overfitting (CO) monitor: per-epoch PGD/FGSM accuracy and a CO verdict.

Fast (single-step) AT can collapse within one epoch: the model becomes robust to FGSM but not
to PGD (Wong et al. 2020; FGSM-RS "collapses to 0" in the FGSM-PGI poster's table). The monitor
runs after every epoch, for every policy, on fixed samples (the first ``train_subset``
training and ``test_subset`` held-out samples, un-augmented) and logs:

* ``monitor/train_pgd_acc``, ``monitor/test_pgd_acc`` (PGD-k, α = ε/4, random start) and
  ``monitor/test_fgsm_acc`` (one step of size ε from the clean point);
* ``monitor/co`` = 1 when :func:`detect_co` says so: the test PGD accuracy *collapsed* (fell
  by more than ``drop_ratio`` in one epoch, or below ``floor``) while the test FGSM accuracy
  *stayed high* (fell by at most 1 − ``fgsm_keep`` relative to the previous epoch and is at
  least ``min_gap`` above the PGD accuracy) — the signature of CO, as opposed to a run that
  degrades against every attack;
* ``monitor/best_test_pgd_acc``.

The monitor is called with explicit inputs and returns a :class:`Verdict`; what follows from
it is the loop's business: ``keep_best`` saves ``checkpoints/best.pt`` when the verdict says
the accuracy improved (what the reference repos report as "best", i.e. early stopping on the
held-out set, docs/references.md §0.3), ``stop_on_co`` ends training after the epoch that shows CO
(the final evaluation still runs; the run is tagged ``co_stopped_epoch``). Its history (the
previous epoch's accuracies, the best so far) is restored from the run's metrics on resume
(:meth:`COMonitor.restore`).

The "test" figures are those of the run's held-out split: the validation split with
``data.val_size`` (``keep_best`` then never selects on the test set), else the test split. The
test PGD figure equals the loop's ``test/pgd_acc`` (or ``val/pgd_acc``) when the subsets and
steps agree (same samples, same seeded generator), so that value is passed in and reused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from learned_at.envs.geometry.base import Geometry
from learned_at.runners.robustness import evaluate

__all__ = ["COMonitor", "Verdict", "detect_co"]


def detect_co(pgd: float, fgsm: float, prev_pgd: float | None, prev_fgsm: float | None,
              config: Any) -> bool:
    """Whether an epoch shows catastrophic overfitting (see the module docstring).

    Args:
        pgd, fgsm: this epoch's held-out PGD and FGSM accuracy in [0, 1].
        prev_pgd, prev_fgsm: the previous epoch's (None at the first epoch).
        config: thresholds (:class:`runners.config.MonitorConfig`).
    """
    collapsed = pgd < config.floor or (prev_pgd is not None and pgd < config.drop_ratio * prev_pgd)
    fgsm_high = fgsm >= pgd + config.min_gap and (
        prev_fgsm is None or fgsm >= config.fgsm_keep * prev_fgsm)
    return bool(collapsed and fgsm_high)


@dataclass(frozen=True)
class Verdict:
    """The monitor's reading of one epoch.

    Attributes:
        metrics: ``monitor/*`` values to log.
        co: the epoch shows catastrophic overfitting.
        improved: the held-out PGD accuracy is the best so far (``keep_best`` saves it).
        stop: training should end after this epoch (``stop_on_co`` and CO).
    """

    metrics: dict[str, float]
    co: bool
    improved: bool
    stop: bool


@dataclass(frozen=True)
class MonitorData:
    """The fixed samples the monitor reads (on the model's device).

    Attributes:
        held_out_x, held_out_y: the held-out split, (N, C, H, W) in [0, 1] and (N,).
        train_x, train_y: the first training samples, un-augmented.
    """

    held_out_x: torch.Tensor
    held_out_y: torch.Tensor
    train_x: torch.Tensor
    train_y: torch.Tensor


class COMonitor:
    """Per-epoch CO check with its own history (previous accuracies, best so far).

    Args:
        config: thresholds and subsets (:class:`runners.config.MonitorConfig`, resolved:
            ``train_subset`` / ``test_subset`` set).
    """

    def __init__(self, config: Any) -> None:
        self.config = config
        self.prev: tuple[float, float] | None = None
        self.best = -1.0

    def restore(self, history: Mapping[str, Mapping[int, float]], epoch: int) -> None:
        """Continue after a resume at ``epoch``: ``history`` holds the run's logged
        ``monitor/test_pgd_acc`` and ``monitor/test_fgsm_acc`` by step."""
        pgd = history.get("monitor/test_pgd_acc", {})
        fgsm = history.get("monitor/test_fgsm_acc", {})
        if epoch - 1 in pgd and epoch - 1 in fgsm:
            self.prev = (pgd[epoch - 1], fgsm[epoch - 1])
        self.best = max(pgd.values(), default=-1.0)

    def __call__(self, model: nn.Module, data: MonitorData, geometry: Geometry, eps: float,
                 seed: int, batch_size: int, reuse_pgd: float | None = None,
                 progress: bool = False) -> Verdict:
        """Evaluate ``model`` and judge the epoch.

        Args:
            model: the target (evaluated in eval mode).
            data: the fixed samples (the first ``test_subset`` / ``train_subset`` are used).
            geometry, eps: the threat.
            seed: seed of the attacks' random starts.
            batch_size: evaluation batch size.
            reuse_pgd: the held-out PGD accuracy the loop already measured on the same samples
                with the same attack (None: measure it here).
            progress: progress bars.
        """
        c = self.config
        n_test = min(c.test_subset, len(data.held_out_y))
        pgd_name = f"pgd{c.pgd_steps}"
        attacks = ["fgsm"] if reuse_pgd is not None else ["fgsm", pgd_name]
        device = data.held_out_x.device
        test = evaluate(model, data.held_out_x[:n_test], data.held_out_y[:n_test], attacks,
                        geometry, eps, batch_size,
                        torch.Generator(device=device).manual_seed(seed), progress)
        train = evaluate(model, data.train_x[:c.train_subset], data.train_y[:c.train_subset],
                         [pgd_name], geometry, eps, batch_size,
                         torch.Generator(device=device).manual_seed(seed), progress)
        pgd = test[pgd_name]["acc"] if reuse_pgd is None else float(reuse_pgd)
        fgsm = test["fgsm"]["acc"]
        prev_pgd, prev_fgsm = self.prev if self.prev is not None else (None, None)
        co = detect_co(pgd, fgsm, prev_pgd, prev_fgsm, c)
        self.prev = (pgd, fgsm)
        improved = pgd > self.best
        self.best = max(self.best, pgd)
        metrics = {"monitor/train_pgd_acc": train[pgd_name]["acc"], "monitor/test_pgd_acc": pgd,
                   "monitor/test_fgsm_acc": fgsm, "monitor/co": float(co),
                   "monitor/best_test_pgd_acc": self.best}
        return Verdict(metrics, co, improved, co and c.stop_on_co)
