"""The co-training loop: :func:`train` reads top to bottom; :func:`train_step` is one batch.

Per batch (:func:`train_step`): the policy attacks the batch through the env, the target takes
its AT step, the policy may learn. Per epoch: the held-out accuracies (clean, PGD-k on a fixed
subset), the CO monitor, the policy's choice distributions, the epoch's metrics in MLflow, a
checkpoint and a summary line through ``logging``. :func:`final_evaluation` is the end of a
run: clean and PGD accuracy on the whole test set.

Stops and failures, each without losing work:

* a stop signal (SIGTERM, SIGINT: :class:`runners.preemption.StopSignals`) is honoured at the
  end of the batch in flight, after a checkpoint at that batch; during an evaluation (which
  changes no training state) at once, after a checkpoint at the end of the epoch's training;
* a checkpoint is also written every ``checkpoint_every_s`` seconds (at the end of a batch);
* the tracking server refusing a request or not answering through MLflow's retries (a longer
  outage; a shorter one only delays the request) stops the run after a checkpoint that holds
  what was not logged (:func:`_commit_epoch`), or after the local checkpoint whose copy the
  server did not take;
* NaN or ±inf in the loss or a policy metric stops the run (:class:`NonFiniteError`) with the
  batch and the last good checkpoint in the message. It is read on the host every
  :data:`SYNC_EVERY` batches (with the progress line), before every checkpoint and at the end
  of each epoch: no host sync per batch, and no checkpoint ever holds a non-finite step.

Under ``torchrun`` the training scalars are averaged over the ranks per batch (one small
all-reduce, no host sync), rank 0 evaluates, logs and checkpoints, and a stop signal on any
rank is agreed at the periodic syncs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import torch
from tqdm.auto import tqdm

from learned_at.agents.base import StepInfo
from learned_at.agents.ppo.vec_env import Driven
from learned_at.envs.episode import run_episode
from learned_at.runners.checkpoint import Checkpointer, Position, run_state
from learned_at.runners.co_monitor import MonitorData, Verdict
from learned_at.runners.distributed import broadcast_buffers, broadcast_object
from learned_at.runners.distributions import distribution_metrics, log_distributions
from learned_at.runners.epoch_progress import EpochProgress
from learned_at.runners.fast_path import autocast
from learned_at.runners.host_values import host_values
from learned_at.runners.preemption import RunInterrupted, StopSignals
from learned_at.runners.robustness import evaluate
from learned_at.runners.run import Run
from learned_at.runners.tracking_errors import TrackingAccessError
from learned_at.targets.distributed import all_gather_cat, all_reduce_max, all_reduce_mean
from learned_at.targets.loader import Batch

__all__ = ["NonFiniteError", "SYNC_EVERY", "evaluate_epoch", "final_evaluation", "log_epoch",
           "sb3_driven", "train", "train_step"]

SYNC_EVERY = 10
"""Batches between two host reads of the running loss (progress line) and the NaN flag."""

_log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """NaN or ±inf in the loss or a policy metric: the run stops (its message says where)."""


def train(run: Run, tracker: Any, position: Position, checkpoints: Checkpointer,
          signals: StopSignals) -> None:
    """Train ``run`` from ``position`` to its last epoch (or a CO stop); see the module doc."""
    cfg, main = run.config, run.world.is_main
    monitor_data = _monitor_data(run)
    for epoch in range(position.epoch, run.epochs):
        progress = position.begin_epoch(run.policy, epoch, run.generators.data.get_state())
        bar = tqdm(total=len(run.loader), initial=progress.batch, leave=False,
                   desc=f"epoch {epoch + 1}/{run.epochs}", disable=not (cfg.progress and main))
        start = _clock(run)
        for batch in epoch_batches(run, progress):
            try:
                stats, policy_metrics = train_step(run, batch, epoch, position.global_step)
            except RuntimeError:
                check_finite(progress, checkpoints)  # a NaN policy fails in its sampler
                raise
            position.global_step += 1
            progress.add(_mean_over_ranks(stats, run), _mean_over_ranks(policy_metrics, run))
            bar.update(1)
            if position.global_step % SYNC_EVERY == 0:
                _show_running_loss(progress, bar, checkpoints)
            signum = _agreed_stop(run, signals, position.global_step)
            if signum or checkpoints.due(cfg.checkpoint_every_s):
                _checkpoint(run, position, checkpoints, epoch, progress.batch)
            if signum:
                raise RunInterrupted(signum)
        check_finite(progress, checkpoints)
        metrics: dict[str, Any] = {**progress.stats.means(), **progress.policy_metrics.means()}
        broadcast_buffers(run.target.model, run.world)  # every rank evaluates rank 0's model
        seconds = progress.seconds + _clock(run) - start
        bar.close()
        t_eval = time.perf_counter()
        try:
            with signals.interruptible():  # nothing to lose here: stop at once
                metrics.update(epoch_metrics(run, seconds))
                verdict = _monitor(run, monitor_data, metrics)
        except RunInterrupted:
            progress.seconds = seconds
            _checkpoint(run, position, checkpoints, epoch, len(run.loader))
            raise
        metrics.update(verdict.metrics)
        if main and verdict.improved and cfg.monitor.keep_best:
            checkpoints.save_best(run_state(run, position, epoch + 1), epoch)
        stop = broadcast_object(verdict.stop, run.world)
        _commit_epoch(run, tracker, position, checkpoints, epoch, metrics, stop)
        _log_summary(run, epoch, metrics, seconds, time.perf_counter() - t_eval)
        signals.check()  # a signal during the commit: the checkpoint is written
        if stop:
            tracker.set_tag("co_stopped_epoch", epoch)
            break


def train_step(run: Run, batch: Batch, epoch: int, step: int
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Attack one batch with the policy, take the target's AT step, let the policy learn.

    Returns:
        (training scalars, policy metrics), all 0-dim device tensors (no host sync).
    """
    if run.threads is not None:
        run.threads.poll()  # threads=0: the CPUs other processes leave free (≤ 1 check/s)
    with autocast(run.config.perf, run.device):  # perf.bf16: attack and AT step only
        result = run_episode(run.env, run.policy, batch.x, batch.y, batch.index,
                             offsets=batch.offsets, flipped=batch.flipped,
                             generator=run.generators.attack)
        inputs = run.policy.target_inputs(result)
        out = run.target.step(result, inputs)
    stats = {f"train/{k}": v for k, v in out.parts.items()}
    stats["train/adv_acc"] = (out.logits_adv.argmax(1) == batch.y).float().mean()
    stats["policy/attack_success"] = 1.0 - stats["train/adv_acc"]  # misclassified after attack
    for key, values in run.policy.describe(result).items():
        run.distributions.add(key, all_gather_cat(values))  # the global batch's
    metrics = run.policy.update(result, run.target.view(), out,
                                StepInfo(step=step, epoch=epoch, generator=run.generators.policy))
    return stats, metrics or {}


def sb3_driven(run: Run) -> Driven:
    """``run`` as a co-training SB3 drives (``policy=ppo_strategy``:
    :func:`agents.ppo.vec_env.learn_with_sb3`): each step is :func:`train_step`."""
    steps = iter(range(1 << 62))
    return Driven(run.policy, run.target.model, run.loader,
                  lambda batch, epoch: train_step(run, batch, epoch, next(steps)))


def epoch_batches(run: Run, progress: EpochProgress) -> Iterator[Batch]:
    """The epoch's batches from ``progress.batch`` on, in the uninterrupted run's order (the
    epoch's order and skipped augmentations are redrawn from the data generator's state at
    the epoch's start)."""
    batches = iter(run.loader)
    if progress.batch == 0:
        return batches
    gen = run.generators.data
    current = gen.get_state()
    gen.set_state(progress.data_rng)
    for _ in range(progress.batch):
        next(batches)
    gen.set_state(current)
    return batches


def evaluate_epoch(run: Run) -> dict[str, float]:
    """Held-out clean accuracy, PGD on a fixed held-out subset (``test/*``, or ``val/*`` with
    ``data.val_size``), clean accuracy on the training probe."""
    cfg, (x, y), split = run.config, run.held_out, run.held_out_name
    n, steps, bs = min(cfg.eval.test_subset, len(y)), cfg.eval.epoch_pgd_steps, cfg.eval.batch_size
    gen = torch.Generator(device=run.device).manual_seed(cfg.seed)
    res = evaluate(run.target.model, x[:n], y[:n], ["clean", f"pgd{steps}"], run.geometry,
                   run.eps, bs, gen, cfg.progress)
    full = evaluate(run.target.model, x, y, ["clean"], run.geometry, run.eps, bs,
                    progress=cfg.progress)
    probe = evaluate(run.target.model, *run.train_probe, ["clean"], run.geometry, run.eps, bs)
    return {f"{split}/clean_acc": full["clean"]["acc"], f"{split}/pgd_acc": res[f"pgd{steps}"]["acc"],
            "train/clean_acc": probe["clean"]["acc"]}


def epoch_metrics(run: Run, seconds: float) -> dict[str, Any]:
    """The epoch's evaluation, timing, learning rate and the policy's epoch metrics (every rank
    averages the policy's; rank 0 evaluates, the others return only those)."""
    policy = _mean_over_ranks(run.policy.epoch_metrics(), run)
    if not run.world.is_main:
        return policy
    n_images = len(run.loader) * run.config.batch_size
    return {**evaluate_epoch(run), "time/epoch_s": seconds,
            "time/train_images_per_s": n_images / max(seconds, 1e-9),
            "train/lr": run.target.optimizer.param_groups[0]["lr"], **policy}


def final_evaluation(run: Run) -> dict[str, float]:
    """Clean and PGD-k (k = eval.final_pgd_steps) accuracy on the whole test set."""
    ev = run.config.eval
    name = f"pgd{ev.final_pgd_steps}" + ("" if ev.final_restarts == 1
                                         else f"x{ev.final_restarts}")
    res = evaluate(run.target.model, *run.test, ["clean", name], run.geometry, run.eps,
                   ev.batch_size, torch.Generator(device=run.device).manual_seed(run.config.seed),
                   progress=run.config.progress)
    return {"eval/clean_acc": res["clean"]["acc"], f"eval/{name}_acc": res[name]["acc"]}


def check_finite(progress: EpochProgress | None, checkpoints: Checkpointer) -> None:
    """Raise :class:`NonFiniteError` if a non-finite value was seen (one host sync)."""
    if progress is None or progress.bad is None or not bool(progress.bad):
        return
    assert progress.good is not None  # set with bad
    index = int(progress.good)  # batches of the epoch before the first bad one
    raise NonFiniteError(
        f"non-finite loss or policy value (NaN/inf) at epoch {progress.epoch + 1}, batch "
        f"{index + 1} (global step {progress.start_step + index}); the run stops, and "
        f"{checkpoints.describe_last_good()} (try a lower optim.lr or another setting in a new "
        "run)")


# ------------------------------------------------------------------------------- the loop's parts

def _monitor_data(run: Run) -> MonitorData | None:
    """The CO monitor's fixed samples (rank 0 only)."""
    if run.monitor is None or not run.world.is_main:
        return None
    n, train = run.monitor.config.train_subset, run.data.train
    return MonitorData(*run.held_out, train.images[:n].to(run.device).float() / 255,
                       train.labels[:n].to(run.device))


def _monitor(run: Run, data: MonitorData | None, metrics: dict[str, Any]) -> Verdict:
    """The CO monitor's verdict on the epoch (an empty one when it is off, and on ranks > 0)."""
    if run.monitor is None or data is None:
        return Verdict({}, False, False, False)
    c, ev = run.monitor.config, run.config.eval
    same = c.pgd_steps == ev.epoch_pgd_steps and \
        min(c.test_subset, len(data.held_out_y)) == min(ev.test_subset, len(data.held_out_y))
    reuse = metrics.get(f"{run.held_out_name}/pgd_acc") if same else None
    return run.monitor(run.target.model, data, run.geometry, run.eps, run.config.seed,
                       ev.batch_size, reuse, run.config.progress)


def _checkpoint(run: Run, position: Position, checkpoints: Checkpointer, epoch: int,
                batch: int, unlogged: dict[str, Any] | None = None) -> None:
    """A checkpoint at ``batch`` batches into ``epoch`` (never of a non-finite step), holding
    ``unlogged``, an epoch's record the tracking server did not take, if given."""
    check_finite(position.progress, checkpoints)
    checkpoints.save(lambda: run_state(run, position, epoch, batch, unlogged), epoch, batch)


def _commit_epoch(run: Run, tracker: Any, position: Position, checkpoints: Checkpointer,
                  epoch: int, metrics: dict[str, Any], stopping: bool) -> None:
    """Log the epoch (its distributions too) and checkpoint its end. When the tracking server
    refuses or does not answer, the end-of-epoch checkpoint is written anyway, with the
    epoch's record in it (``unlogged``: sent by the resume), and the error is raised."""
    checkpoints.check_writer()
    run.distributions.end_epoch(epoch)
    every = run.config.tracking.plot_every
    plot = every > 0 and ((epoch + 1) % every == 0 or epoch + 1 == run.epochs or stopping)
    if run.world.is_main:  # policy/<key>_{mean,p10,p50,p90}
        metrics.update(distribution_metrics(run.distributions, epoch))
    try:
        log_epoch(run, tracker, epoch, metrics, plot,
                  redone=epoch == position.resumed_epoch)
    except TrackingAccessError:
        position.progress = None
        unlogged = {"epoch": epoch, "plot": plot,
                    "metrics": dict(zip(metrics, host_values(list(metrics.values()))))}
        try:  # the local file; its copy to the server is refused too (or not tried)
            _checkpoint(run, position, checkpoints, epoch + 1, 0, unlogged)
        except TrackingAccessError:
            pass
        raise
    position.progress = None
    _checkpoint(run, position, checkpoints, epoch + 1, 0)


def log_epoch(run: Run, tracker: Any, epoch: int, metrics: dict[str, Any], plot: bool,
              redone: bool = False) -> None:
    """Send an epoch's record: its distributions (tables, heat maps) and its metrics, once
    (``redone``: an epoch redone after a resume is not logged again when it was)."""
    if run.world.is_main:  # distributions/<key>.json, plots/<key>_heatmap.png
        log_distributions(tracker, run.distributions, epoch, log_metrics=False, plot=plot)
    if not (redone and tracker.has_metric_at("train/loss", epoch)):
        tracker.log_metrics(metrics, step=epoch)
    tracker.flush()


def _log_summary(run: Run, epoch: int, m: dict[str, Any], seconds: float,
                 eval_seconds: float) -> None:
    keys = ("train/loss", "train/adv_acc", "test/clean_acc", "test/pgd_acc", "val/clean_acc",
            "val/pgd_acc", "monitor/test_fgsm_acc", "monitor/co")
    values = "  ".join(f"{k}={float(m[k]):.3f}" for k in keys if k in m)
    _log.info("epoch %d/%d  %s  train %.1fs  eval %.1fs", epoch + 1, run.epochs, values,
              seconds, eval_seconds)


def _show_running_loss(progress: EpochProgress, bar: tqdm, checkpoints: Checkpointer) -> None:
    """The periodic host read: running loss / adversarial accuracy and the NaN flag."""
    m = progress.stats.means()
    assert progress.bad is not None  # set by progress.add
    loss, adv, bad = torch.stack([m["train/loss"], m["train/adv_acc"],
                                  progress.bad.float()]).tolist()  # one transfer
    if bad:
        check_finite(progress, checkpoints)
    bar.set_postfix(loss=f"{loss:.3f}", adv_acc=f"{adv:.3f}")


def _agreed_stop(run: Run, signals: StopSignals, step: int) -> int:
    """The stop signal to honour now (0: none): this process's, or under torchrun any rank's,
    agreed at the periodic syncs."""
    if not run.world.distributed:
        return signals.signum or 0
    if step % SYNC_EVERY:
        return 0
    flag = torch.tensor([float(signals.signum or 0)], device=run.device)
    return int(all_reduce_max(flag).item())


def _mean_over_ranks(metrics: dict[str, Any], run: Run) -> dict[str, Any]:
    """Each scalar's mean over the torchrun ranks (one all-reduce; equal shards make it the
    global batch's mean); ``metrics`` itself for one process."""
    if not run.world.distributed or not metrics:
        return metrics
    means = all_reduce_mean(torch.stack([torch.as_tensor(v, device=run.device).reshape(())
                                         .float() for v in metrics.values()]))
    return dict(zip(metrics, means.unbind()))


def _clock(run: Run) -> float:
    """Seconds on the wall clock, after the device's queued work (CUDA) is done."""
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()
