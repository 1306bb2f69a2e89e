"""Catastrophic-overfitting (CO) monitor: per-epoch PGD/FGSM accuracy and a CO flag.

Fast (single-step) AT can collapse within one epoch: the model becomes robust to FGSM but not
to PGD (Wong et al. 2020; FGSM-RS "collapses to 0" in the FGSM-PGI poster's table). The monitor
runs after every epoch, for every policy, on fixed samples (the first ``train_subset``
training and ``test_subset`` test samples, un-augmented) and logs:

* ``monitor/train_pgd_acc``, ``monitor/test_pgd_acc`` (PGD-k, α = ε/4, random start) and
  ``monitor/test_fgsm_acc`` (one step of size ε from the clean point);
* ``monitor/co`` = 1 when :func:`detect_co` says so: the test PGD accuracy *collapsed* (fell
  by more than ``drop_ratio`` in one epoch, or below ``floor``) while the test FGSM accuracy
  *stayed high* (fell by at most 1 − ``fgsm_keep`` relative to the previous epoch and is at
  least ``min_gap`` above the PGD accuracy) — the signature of CO, as opposed to a run that
  degrades against every attack;
* ``monitor/best_test_pgd_acc``.

Options: ``keep_best`` saves ``checkpoints/best.pt`` whenever the test PGD accuracy improves
(what the reference repos report as "best", i.e. early stopping on the test set, docs/seeds.md
§0.3); ``stop_on_co`` ends training after the epoch that shows CO (the final evaluation
still runs) and tags the run ``co_stopped_epoch``.

The test PGD figure equals the runner's ``test/pgd_acc`` when the subsets and steps agree
(same samples, same seeded generator), so it is then reused instead of recomputed. With a
validation split (``data.val_size``) the "test" figures are taken on it (``val/pgd_acc`` is
reused), so ``keep_best`` selects by validation accuracy, never by the test set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from learned_at.runners.checkpoint import save_checkpoint
from learned_at.runners.config import MonitorConfig
from learned_at.runners.robustness import evaluate

if TYPE_CHECKING:
    from learned_at.runners.cotrain import Cotrainer


def detect_co(pgd: float, fgsm: float, prev_pgd: float | None, prev_fgsm: float | None,
              config: MonitorConfig) -> bool:
    """Whether an epoch shows catastrophic overfitting (see the module docstring).

    Args:
        pgd, fgsm: this epoch's test PGD and FGSM accuracy in [0, 1].
        prev_pgd, prev_fgsm: the previous epoch's (None at the first epoch).
        config: thresholds.
    """
    collapsed = pgd < config.floor or (prev_pgd is not None and pgd < config.drop_ratio * prev_pgd)
    fgsm_high = fgsm >= pgd + config.min_gap and (
        prev_fgsm is None or fgsm >= config.fgsm_keep * prev_fgsm)
    return bool(collapsed and fgsm_high)


class COMonitor:
    """Epoch hook (``Cotrainer.epoch_hooks``): evaluates, flags CO, keeps the best checkpoint.

    Its history (previous accuracies, best so far) is re-read from the MLflow run on resume.
    """

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self.prev: tuple[float, float] | None = None
        self.best = -1.0
        self._restored = False

    def _restore(self, trainer: Cotrainer, epoch: int) -> None:
        """On resume, take the previous epoch's figures and the best one from the run."""
        self._restored = True
        if epoch == 0 or self.prev is not None or trainer.tracker is None:
            return
        client, run_id = trainer.tracker.client, trainer.tracker.run_id
        hist = {k: {m.step: m.value for m in client.get_metric_history(run_id, k)}
                for k in ("monitor/test_pgd_acc", "monitor/test_fgsm_acc")}
        pgd, fgsm = hist["monitor/test_pgd_acc"], hist["monitor/test_fgsm_acc"]
        if epoch - 1 in pgd and epoch - 1 in fgsm:
            self.prev = (pgd[epoch - 1], fgsm[epoch - 1])
        self.best = max(pgd.values(), default=-1.0)

    def _accuracies(self, trainer: Cotrainer) -> dict[str, float]:
        c, ev = self.config, trainer.cfg.eval
        k, eps, bs = c.pgd_steps, trainer.resolved.eps, ev.batch_size
        n_train = ev.test_subset if c.train_subset is None else c.train_subset
        held_x, held_y = trainer.monitor_x, trainer.monitor_y
        n_test = min(ev.test_subset if c.test_subset is None else c.test_subset, len(held_y))
        gen = torch.Generator(device=trainer.device).manual_seed(trainer.cfg.seed)
        reuse = getattr(trainer, "current_metrics", {}).get(f"{trainer.monitor_split}/pgd_acc")
        attacks = ["fgsm"] if (reuse is not None and k == ev.epoch_pgd_steps
                               and n_test == min(ev.test_subset, len(held_y))) \
            else ["fgsm", f"pgd{k}"]
        progress = trainer.cfg.progress
        test = evaluate(trainer.model, held_x[:n_test], held_y[:n_test],
                        attacks, trainer.geometry, eps, bs, gen, progress)
        train_x = trainer.data.train.images[:n_train].to(trainer.device).float() / 255
        train_y = trainer.data.train.labels[:n_train].to(trainer.device)
        train = evaluate(trainer.model, train_x, train_y, [f"pgd{k}"], trainer.geometry, eps, bs,
                         torch.Generator(device=trainer.device).manual_seed(trainer.cfg.seed),
                         progress)
        return {"monitor/train_pgd_acc": train[f"pgd{k}"]["acc"],
                "monitor/test_pgd_acc": test[f"pgd{k}"]["acc"] if f"pgd{k}" in test
                else float(reuse),
                "monitor/test_fgsm_acc": test["fgsm"]["acc"]}

    def __call__(self, trainer: Cotrainer, epoch: int) -> dict[str, Any]:
        if not self._restored:
            self._restore(trainer, epoch)
        m = self._accuracies(trainer)
        pgd, fgsm = m["monitor/test_pgd_acc"], m["monitor/test_fgsm_acc"]
        prev_pgd, prev_fgsm = self.prev if self.prev is not None else (None, None)
        co = detect_co(pgd, fgsm, prev_pgd, prev_fgsm, self.config)
        self.prev = (pgd, fgsm)
        if pgd > self.best:
            self.best = pgd
            if self.config.keep_best and trainer.tracker is not None:
                path = trainer.checkpoint_path(trainer.tracker.run_id).with_name("best.pt")
                save_checkpoint(path, trainer.state(epoch + 1))
                trainer.tracker.log_artifact(str(path), "checkpoints")
                trainer.tracker.set_tag("best_epoch", epoch)
        if co and self.config.stop_on_co:
            trainer.stop_requested = True
            if trainer.tracker is not None:
                trainer.tracker.set_tag("co_stopped_epoch", epoch)
        return {**m, "monitor/co": float(co), "monitor/best_test_pgd_acc": self.best}
