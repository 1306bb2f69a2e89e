"""Co-training: a target network and an attack policy, alternating on every batch.

Usage::

    python -m runners.cotrain [group=option ...] [key=value ...]     # one run
    python -m runners.cotrain -m policy=pgd_at,fgsm_rs seed=0,1       # a sweep (Hydra multirun)
    python -m runners.cotrain resume=<run_id> [epochs=N]              # continue (or extend) a run
    python -m runners.cotrain --help | --cfg job                      # fields and defaults / config

Per batch: the policy attacks the batch through the env, the target takes its AT step, the
policy may learn (``policy.update``). Per epoch: test accuracy (clean, PGD-10 on a fixed
subset), the policy's choice distributions, a checkpoint, a summary line through ``logging``.
At the end: clean and PGD-20 accuracy on the whole test set, and the target as an MLflow model.
Everything goes to one MLflow run; the last line printed is ``run_id=<id>``.

Checkpoints and resume (``<checkpoint_dir>/<run id>/last.pt``, mirrored to the run's
``checkpoints/last.pt``; written atomically, so a failed write leaves the previous one):

* after every epoch, every ``checkpoint_every_s`` seconds (at the end of a batch), and on
  SIGTERM / SIGINT (at the end of the batch in flight; during an evaluation at once): the run
  is then ``KILLED`` with its resume command in the tag ``resume_command``, exit status
  128 + signal;
* a checkpoint holds the position inside the epoch (batches done, the data order's generator
  state at the epoch start, the epoch's running sums and distribution values), so
  ``resume=<id>`` continues mid-epoch *exactly* as the uninterrupted run would have (also
  after ``kill -9``, from the last checkpoint written);
* ``resume=<id> epochs=N`` re-plans a run to N epochs (N >= the epochs it has started),
  also a finished one: every schedule that depends on the run's length — the target's
  learning rate, LAS-AT's policy lr milestones, curriculum / Dynamic ramps, PPO's progress —
  is re-derived for N epochs from the current step on (the epochs already trained keep the
  old schedule); the tag ``epochs_replanned`` records it. A finished run resumed without
  ``epochs=`` is refused, and the final evaluation is logged once per step;
* NaN or ±inf in the loss or a policy metric stops the run (``FAILED``) with the batch and
  the last good checkpoint in the message; it is checked on the host every
  :data:`SYNC_EVERY` batches (the progress line's sync), before every checkpoint and at the
  end of each epoch — no host sync per batch, and no checkpoint ever holds a non-finite step.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from learned_at.agents.base import Policy, PolicyContext, StepInfo, make_policy
from learned_at.envs.attack_env import AttackEnv, EnvConfig
from learned_at.envs.episode import run_episode
from learned_at.envs.geometry.base import make_geometry
from learned_at.envs.requirements import EnvRequirements
from learned_at.runners.checkpoint import (CheckpointError, restore_rng_state, rng_state,
                                           save_checkpoint)
from learned_at.runners.cli_args import UsageError, run_cli, wants_help
from learned_at.runners.co_monitor import COMonitor
from learned_at.runners.config import (CotrainConfig, ConfigError, compose_config, config_to_dict,
                                       plain, resolve)
from learned_at.runners.device import pick_device
from learned_at.runners.distributed import (DistributedConfigError, NullTracker, broadcast_buffers,
                                            broadcast_object, init_world, rank_seed, wrap_model)
from learned_at.runners.distributions import DistributionHistory, log_distributions
from learned_at.runners.epoch_progress import EpochProgress
from learned_at.runners.preemption import RunInterrupted, StopSignals
from learned_at.runners.fast_path import autocast, prepare_model
from learned_at.runners.recipes import expand_recipes, format_recipes
from learned_at.runners.robustness import evaluate
from learned_at.runners.run_loading import load_run_state
from learned_at.runners.run_naming import RESUME_KEYS, resolved_config, run_name
from learned_at.runners.schedule import make_scheduler
from learned_at.runners.threads import apply_threads
from learned_at.runners.tracking import Tracker, flatten_config
from learned_at.targets.datasets import DataSet, load_dataset, split_validation, subset_dataset
from learned_at.targets.distributed import (all_gather_cat, all_reduce_max, all_reduce_mean,
                                            world_size)
from learned_at.targets.loader import Batch, DeviceLoader, to_device
from learned_at.targets.losses.base import LossContext, make_at_loss
from learned_at.targets.models import make_model
from learned_at.targets.target import Target

CHECKPOINT_FORMAT = 3
"""3: checkpoints may fall inside an epoch (``batch`` > 0 and ``progress``). 2 still loads."""
GENERATORS = ("data", "attack", "policy")
SYNC_EVERY = 10
"""Batches between two host reads of the running loss (progress line) and the NaN flag."""
PROG = "runners.cotrain"

_log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """NaN or ±inf in the loss or a policy metric: the run stops (its message says where)."""


class CheckpointWriteError(RuntimeError):
    """The final checkpoint could not be written (the run stays resumable from the last one)."""


class Cotrainer:
    """Owns one run's objects: data, target, AT loss, env, policy, optimiser, tracker.

    Args:
        cfg: the composed config.
        overrides: the command-line overrides it came from (stored for resume).
        tracking_uri: MLflow tracking URI (None = MLflow's default / MLFLOW_TRACKING_URI).
        data: an in-memory data set to use instead of loading ``cfg.data`` (benchmarks, tests).
        tags: extra tags of the run (a sweep's ``sweep_id``).
    """

    def __init__(self, cfg: CotrainConfig, overrides: list[str],
                 tracking_uri: str | None = None, data: DataSet | None = None,
                 tags: dict[str, str] | None = None) -> None:
        self.cfg, self.overrides = cfg, list(overrides)
        self.extra_tags = dict(tags or {})
        try:
            apply_threads(cfg.threads)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.resolved = r = resolve(cfg)
        self.world, self.device = init_world(pick_device(cfg.device))  # torchrun: this rank's
        if data is None:
            data = load_dataset(cfg.data.name, cfg.data.root, download=cfg.data.download)
        try:
            self.data, val = split_validation(
                subset_dataset(data, cfg.data.train_subset, cfg.data.test_subset),
                cfg.data.val_size)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        self.gens = {k: torch.Generator(device=self.device).manual_seed(
            rank_seed(cfg.seed + i, self.world, shared=k == "data"))
            for i, k in enumerate(GENERATORS)}
        try:  # batch_size is the global batch: each torchrun rank takes its slice
            self.train_loader = DeviceLoader(self.data.train, cfg.batch_size, self.device,
                                             shuffle=True, augment=r.augment, drop_last=True,
                                             generator=self.gens["data"],
                                             pin_memory=cfg.perf.pin_memory,
                                             shard=(self.world.rank, self.world.size))
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if len(self.train_loader) == 0:
            raise ConfigError(f"batch_size={cfg.batch_size} exceeds the training set "
                              f"({len(self.data.train)} samples): accepted 1 to "
                              f"{len(self.data.train)}")
        self.test_x = to_device(self.data.test.images, self.device,
                                cfg.perf.pin_memory).float().div_(255)
        self.test_y = self.data.test.labels.to(self.device)
        #: the held-out samples of the per-epoch monitoring: the validation split, else the test set
        self.monitor_split = "test" if val is None else "val"
        self.monitor_x, self.monitor_y = (self.test_x, self.test_y) if val is None else (
            val.images.to(self.device).float().div_(255), val.labels.to(self.device))
        n_sub = min(cfg.eval.test_subset, len(self.test_y))
        self.train_sub_x = self.data.train.images[:n_sub].to(self.device).float().div_(255)
        self.train_sub_y = self.data.train.labels[:n_sub].to(self.device)
        torch.manual_seed(cfg.seed)  # model initialisation is the only global-RNG consumer
        model = make_model(r.target, self.data.image_shape, self.data.num_classes)
        prepare_model(model.to(self.device), cfg.perf)
        self.geometry = make_geometry(cfg.threat)  # its budget was checked by compose_config
        try:
            train_module = wrap_model(model, self.world, self.device, cfg.sync_batchnorm)
        except DistributedConfigError as error:
            raise ConfigError(str(error)) from None
        try:  # components check their settings when built: a bad one is a config error
            at_loss = make_at_loss(cfg.at_loss, LossContext(
                num_train=len(self.data.train), num_classes=self.data.num_classes,
                epochs=r.epochs, batches_per_epoch=len(self.train_loader), device=self.device,
                geometry=self.geometry))
            problem = at_loss.check_setting(cfg.policy, self.geometry)
            if problem:
                raise ConfigError(problem)
            self.context = PolicyContext(
                geometry=self.geometry, eps=r.eps, image_shape=self.data.image_shape,
                num_classes=self.data.num_classes, num_train=len(self.data.train),
                epochs=r.epochs, batches_per_epoch=len(self.train_loader), device=self.device,
                attack_loss=at_loss.attack_loss, data=cfg.data.name,
                at_loss_name=cfg.at_loss.name)
            self.policy: Policy = make_policy(cfg.policy, self.context).to(self.device)
            if self.world.distributed and self.policy.not_data_parallel:
                raise ValueError(self.policy.not_data_parallel)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        optimizer = torch.optim.SGD(model.parameters(), lr=r.lr, momentum=cfg.optim.momentum,
                                    weight_decay=cfg.optim.weight_decay)
        scheduler = make_scheduler(optimizer, cfg.optim.schedule,
                                   r.epochs * len(self.train_loader), cfg.optim.milestones,
                                   cfg.optim.gamma, cfg.optim.cyclic_peak)
        self.target = Target(model, optimizer, scheduler, at_loss, self.make_env, cfg.bn_mode,
                             train_module)
        self.env = self.make_env(self.policy.requirements().merge(at_loss.env_requirements))
        self.distributions = DistributionHistory(max_categories=16)
        for key, grid in self.policy.grids().items():
            self.distributions.declare(key, grid)
        self.start_epoch, self.global_step = 0, 0
        self.tracking_uri = tracking_uri
        self.tracker: Tracker | None = None
        #: called after each epoch's evaluation: hook(trainer, epoch) -> metrics to log.
        self.epoch_hooks: list[Callable[[Cotrainer, int], dict[str, Any]]] = []
        if cfg.monitor.enabled:
            self.epoch_hooks.append(COMonitor(cfg.monitor))
        #: set by a hook (e.g. the CO monitor's stop_on_co) to end training after this epoch.
        self.stop_requested = False
        #: the metrics of the epoch being finished, readable by epoch hooks.
        self.current_metrics: dict[str, Any] = {}
        self.signals = StopSignals()
        self._agreed_signum = 0  # a torchrun job's agreed stop signal (any rank's)
        self._progress: EpochProgress | None = None  # the epoch in progress
        self._resume_progress: EpochProgress | None = None  # a checkpoint's partial epoch
        self._resume_policy: tuple[dict, dict] | None = None  # policy state for a mid-epoch resume
        self._resumed_epoch: int | None = None  # first epoch after a resume (dedup its metrics)
        self._last_good: tuple[Path, int, int] | None = None  # checkpoint, epoch, batch
        self._save_failed = False
        self._last_save_time = time.monotonic()

    @property
    def model(self) -> torch.nn.Module:
        """The target network."""
        return self.target.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The target's optimiser."""
        return self.target.optimizer

    def make_env(self, requirements: EnvRequirements) -> AttackEnv:
        """An attack env on the target for the run's geometry, attack loss and batch size."""
        config = EnvConfig(geometry=self.geometry, loss=self.context.attack_loss,
                           bn_mode=self.cfg.bn_mode, requirements=requirements,
                           augmented=self.resolved.augment, num_classes=self.data.num_classes)
        return AttackEnv(self.model, config, self.data.image_shape,
                         self.train_loader.local_batch_size, source=self.train_loader)

    # -- checkpoints ------------------------------------------------------------------
    def checkpoint_path(self, run_id: str) -> Path:
        """Local checkpoint of a run: ``<checkpoint_dir>/<run_id>/last.pt``."""
        return Path(self.cfg.checkpoint_dir) / run_id / "last.pt"

    def state(self, next_epoch: int, batch: int = 0) -> dict[str, Any]:
        """Everything needed to continue the run exactly (weights_only-loadable).

        ``next_epoch``/``batch``: the position — ``batch`` batches of epoch ``next_epoch`` are
        done; with ``batch`` > 0 the epoch's running sums and pending distribution values are
        saved too (:class:`EpochProgress`).
        """
        mid_epoch = batch > 0 and self._progress is not None
        return {
            "format": CHECKPOINT_FORMAT, "overrides": self.overrides,
            "config": config_to_dict(self.cfg), "epoch": next_epoch, "batch": batch,
            "global_step": self.global_step, **self.target.state_dict(),
            "policy": self.policy.state_dict(), "policy_extra": self.policy.extra_state(),
            "rng": rng_state(self.gens),
            "progress": self._progress.state() if mid_epoch else None,
            "distributions": self.distributions.state_dict(include_pending=mid_epoch),
            "image_shape": list(self.data.image_shape), "num_classes": self.data.num_classes,
            "target": self.resolved.target, "eps": self.resolved.eps,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` (the inverse, for resume)."""
        if state.get("format") not in (2, CHECKPOINT_FORMAT):
            raise CheckpointError(f"checkpoint format {state.get('format')} was written by another "
                                  f"version of this project (this one reads {CHECKPOINT_FORMAT});"
                                  " start a fresh run")
        self.target.load_state_dict(state)
        self._rederive_lr()
        self.policy.load_state_dict(state["policy"])
        self.policy.load_extra_state(state["policy_extra"])
        restore_rng_state(state["rng"], self.gens)
        for i, key in enumerate(GENERATORS):  # rank 0's streams were saved: the others fork
            if key != "data" and self.world.rank:
                self.gens[key].manual_seed(rank_seed(self.cfg.seed + i, self.world,
                                                     step=state["global_step"]))
        self.distributions.load_state_dict(state["distributions"], self.device)
        self.start_epoch, self.global_step = state["epoch"], state["global_step"]
        self._resumed_epoch = self.start_epoch
        if state.get("progress") is not None:  # written inside an epoch
            self._resume_progress = EpochProgress.from_state(state["progress"], self.device)
            self._resume_policy = (state["policy"], state["policy_extra"])

    def _rederive_lr(self) -> None:
        """Set each group's lr from this run's schedule at the restored step (the same value
        unless the run was re-planned to another number of epochs)."""
        scheduler = self.target.scheduler
        for group, base, f in zip(self.optimizer.param_groups, scheduler.base_lrs,
                                  scheduler.lr_lambdas):
            group["lr"] = base * f(scheduler.last_epoch)

    def save(self, next_epoch: int, batch: int = 0) -> bool:
        """Atomic local checkpoint at a position, mirrored to the MLflow run as
        ``checkpoints/last.pt``. A failed write (a full disk) is logged and leaves the previous
        checkpoint intact; returns whether it was written."""
        assert self.tracker is not None
        self._check_finite()  # never checkpoint a non-finite step
        if not self.world.is_main:  # rank 0 holds the whole state (weights are equal)
            self._last_save_time = time.monotonic()
            return True
        path = self.checkpoint_path(self.tracker.run_id)
        self._last_save_time = time.monotonic()
        try:
            save_checkpoint(path, self.state(next_epoch, batch))
        except (OSError, RuntimeError) as error:
            self._save_failed = True
            last = self._describe_last_good()
            _log.error("checkpoint write failed (%s); %s", _one_line(error), last)
            self._safe_tag("checkpoint_error", f"{_one_line(error)}; {last}")
            return False
        self._save_failed = False
        self._last_good = (path, next_epoch, batch)
        try:
            self.tracker.log_artifact(str(path), "checkpoints")
        except Exception as error:  # the local copy is what resume reads first
            _log.warning("could not copy the checkpoint to MLflow: %s", _one_line(error))
        return True

    def _describe_last_good(self) -> str:
        if self._last_good is None:
            return "no checkpoint of this run has been written yet"
        path, epoch, batch = self._last_good
        where = f"end of epoch {epoch}" if batch == 0 else f"epoch {epoch + 1}, batch {batch}"
        return f"the last good checkpoint {path} ({where}) is intact"

    def _safe_tag(self, key: str, value: str) -> None:
        try:
            assert self.tracker is not None
            self.tracker.set_tag(key, value[:5000])
        except Exception:  # pragma: no cover - a tag must never stop the run
            _log.warning("could not set tag %s", key)

    # -- the loop ---------------------------------------------------------------------
    def train_batch(self, b: Batch, epoch: int) -> tuple[dict[str, torch.Tensor],
                                                        dict[str, torch.Tensor]]:
        """Attack one batch with the policy, take the target's AT step, let the policy learn.

        Returns:
            (training scalars, policy metrics), all device tensors (no host sync).
        """
        with autocast(self.cfg.perf, self.device):  # perf.bf16: attack and AT step only
            result = run_episode(self.env, self.policy, b.x, b.y, b.index, offsets=b.offsets,
                                 flipped=b.flipped, generator=self.gens["attack"])
            inputs = self.policy.target_inputs(result)
            out = self.target.step(result, inputs)
        stats = {f"train/{k}": v for k, v in out.parts.items()}
        stats["train/adv_acc"] = (out.logits_adv.argmax(1) == b.y).float().mean()
        stats["policy/attack_success"] = 1.0 - stats["train/adv_acc"]  # misclassified after attack
        for key, values in self.policy.describe(result).items():
            self.distributions.add(key, all_gather_cat(values))  # the global batch's
        policy_metrics = self.policy.update(
            result, self.target.view(), out,
            StepInfo(step=self.global_step, epoch=epoch, generator=self.gens["policy"]))
        self.global_step += 1
        return stats, policy_metrics or {}

    def _epoch_batches(self, progress: EpochProgress) -> Iterator[Batch]:
        """The epoch's batches from ``progress.batch`` on, in the uninterrupted run's order."""
        batches = iter(self.train_loader)
        if progress.batch == 0:
            return batches
        gen = self.gens["data"]
        current = gen.get_state()
        gen.set_state(progress.data_rng)  # redraw the epoch's order and skipped augmentations
        for _ in range(progress.batch):
            next(batches)
        gen.set_state(current)
        return batches

    def train_epoch(self, epoch: int, bar: tqdm) -> dict[str, torch.Tensor]:
        """One pass over the training set (or its rest, after a mid-epoch resume); returns
        device-side epoch means."""
        p, self._resume_progress = self._resume_progress, None
        if p is None or p.epoch != epoch:
            p = EpochProgress(epoch, self.global_step, self.gens["data"].get_state())
        self._progress = p
        self.policy.begin_epoch(epoch)
        if self._resume_policy is not None:  # mid-epoch: the policy as it was at that batch
            weights, extra = self._resume_policy
            self.policy.load_state_dict(weights)
            self.policy.load_extra_state(extra)
            self._resume_policy = None
        for b in self._epoch_batches(p):
            try:
                stats, pm = self.train_batch(b, epoch)
            except RuntimeError:
                self._check_finite()  # a NaN policy fails in its sampler: name the NaN
                raise
            # torchrun: the global batch's means (one small all-reduce, no host sync), so every
            # rank -- and rank 0's mid-epoch checkpoint -- holds the same running sums
            p.add(_mean_over_ranks(stats, self.device), _mean_over_ranks(pm, self.device))
            bar.update(1)
            if self.global_step % SYNC_EVERY == 0:
                self._sync(p, bar)
            if self._stop_requested():
                self.save(epoch, p.batch)
                self._raise_stop()
            every = self.cfg.checkpoint_every_s
            if every > 0 and time.monotonic() - self._last_save_time >= every:
                self.save(epoch, p.batch)
        self._check_finite()
        return {**p.stats.means(), **p.policy_metrics.means()}

    def _stop_requested(self) -> bool:
        """A stop signal (any rank's, agreed at the host syncs of a torchrun job)."""
        if not self.world.distributed:
            return self.signals.requested
        if self.global_step % SYNC_EVERY:
            return False
        flag = torch.tensor([float(self.signals.signum or 0)], device=self.device)
        self._agreed_signum = int(all_reduce_max(flag).item())
        return self._agreed_signum > 0

    def _raise_stop(self) -> None:
        self.signals.check()
        if self.world.distributed:  # another rank got the signal
            raise RunInterrupted(self._agreed_signum)

    def _sync(self, p: EpochProgress, bar: tqdm) -> None:
        """The periodic host read: running loss / adversarial accuracy and the NaN flag."""
        m = p.stats.means()
        loss, adv, bad = torch.stack([m["train/loss"], m["train/adv_acc"],
                                      p.bad.float()]).tolist()  # one transfer
        if bad:
            self._check_finite()
        bar.set_postfix(loss=f"{loss:.3f}", adv_acc=f"{adv:.3f}")

    def _check_finite(self) -> None:
        """Raise :class:`NonFiniteError` if a non-finite value was seen (one host sync)."""
        p = self._progress
        if p is None or p.bad is None or not bool(p.bad):
            return
        index = int(p.good)  # batches of the epoch before the first bad one
        step = p.start_step + index
        raise NonFiniteError(
            f"non-finite loss or policy value (NaN/inf) at epoch {p.epoch + 1}, batch "
            f"{index + 1} (global step {step}); the run stops, and "
            f"{self._describe_last_good()} (try a lower optim.lr or another setting in a new "
            "run)")

    def evaluate_epoch(self) -> dict[str, float]:
        """Held-out clean accuracy, PGD on a fixed held-out subset (``test/*``, or ``val/*``
        with ``data.val_size``), clean accuracy on a train subset."""
        n = min(self.cfg.eval.test_subset, len(self.monitor_y))
        steps, split = self.cfg.eval.epoch_pgd_steps, self.monitor_split
        progress = self.cfg.progress
        res = evaluate(self.model, self.monitor_x[:n], self.monitor_y[:n],
                       ["clean", f"pgd{steps}"], self.geometry, self.resolved.eps,
                       self.cfg.eval.batch_size,
                       torch.Generator(device=self.device).manual_seed(self.cfg.seed), progress)
        full_clean = evaluate(self.model, self.monitor_x, self.monitor_y, ["clean"],
                              self.geometry, self.resolved.eps, self.cfg.eval.batch_size,
                              progress=progress)
        train_clean = evaluate(self.model, self.train_sub_x, self.train_sub_y, ["clean"],
                               self.geometry, self.resolved.eps, self.cfg.eval.batch_size)
        return {f"{split}/clean_acc": full_clean["clean"]["acc"],
                f"{split}/pgd_acc": res[f"pgd{steps}"]["acc"],
                "train/clean_acc": train_clean["clean"]["acc"]}

    def final_evaluation(self) -> dict[str, float]:
        """Clean and PGD-k (k = eval.final_pgd_steps) accuracy on the whole test set."""
        k, r = self.cfg.eval.final_pgd_steps, self.cfg.eval.final_restarts
        name = f"pgd{k}" if r == 1 else f"pgd{k}x{r}"
        res = evaluate(self.model, self.test_x, self.test_y, ["clean", name], self.geometry,
                       self.resolved.eps, self.cfg.eval.batch_size,
                       torch.Generator(device=self.device).manual_seed(self.cfg.seed),
                       progress=self.cfg.progress)
        return {"eval/clean_acc": res["clean"]["acc"], f"eval/{name}_acc": res[name]["acc"]}

    def _open_tracker(self, run_id: str | None) -> Tracker:
        if self.world.distributed:  # MLflow from rank 0; the others know its run id
            tracker = self._open_main_tracker(run_id) if self.world.is_main else None
            run_id = broadcast_object(tracker.run_id if tracker else None, self.world)
            return tracker if tracker is not None else NullTracker(run_id)  # type: ignore
        return self._open_main_tracker(run_id)

    def _open_main_tracker(self, run_id: str | None) -> Tracker:
        c, r = self.cfg, self.resolved
        tags = {"policy": c.policy.name, "target": r.target, "data": c.data.name,
                "at_loss": c.at_loss.name, "threat": c.threat.name, **self.extra_tags}
        tracker = Tracker(c.experiment, run_id=run_id,
                          run_name=c.run_name or run_name(c, self.overrides, r.target),
                          tags=tags, tracking_uri=self.tracking_uri,
                          system_metrics=c.tracking.system_metrics,
                          system_metrics_interval_s=c.tracking.system_metrics_interval_s)
        if run_id is None:  # a resumed run keeps the params it was created with
            params = flatten_config(config_to_dict(c))
            params.update({f"resolved.{k}": str(plain(v)) for k, v in vars(r).items()})
            presets = self.policy.resolved_presets()
            params.update(flatten_config({f"resolved.policy.{k}": plain(v)
                                          for k, v in presets.items()}))
            tracker.log_params(params)
            tracker.log_text(" ".join(self.overrides), "config/overrides.txt")
            tracker.log_text(resolved_config(c, r, presets), "config/resolved.yaml")
        return tracker

    def run(self, run_id: str | None = None) -> str:
        """Train from the checkpoint's position (or the start) to the end, evaluate, log the
        model, and return the MLflow run id (see the module docstring for stops and resume)."""
        self.tracker = tracker = self._open_tracker(run_id)
        try:
            with self.signals:
                self._train()
                self._finish()
        except RunInterrupted as stop:
            self._end_killed(f"stopped by signal {stop.signum}")
            raise
        except KeyboardInterrupt:
            self._end_killed("interrupted")
            raise
        except (NonFiniteError, CheckpointWriteError) as error:
            self._safe_tag("failure", str(error))
            if isinstance(error, CheckpointWriteError):
                self._safe_tag("resume_command", self._resume_command())
            tracker.finish("FAILED")
            raise
        except BaseException:
            tracker.finish("FAILED")
            raise
        tracker.finish("FINISHED")
        return tracker.run_id

    def _resume_command(self) -> str:
        assert self.tracker is not None
        extra = "" if self.cfg.checkpoint_dir == "checkpoints" else \
            f" checkpoint_dir={self.cfg.checkpoint_dir}"
        return f"python -m runners.cotrain resume={self.tracker.run_id}{extra}"

    def _end_killed(self, why: str) -> None:
        assert self.tracker is not None
        command = self._resume_command()
        self._safe_tag("resume_command", command)
        self.tracker.finish("KILLED")
        if self.world.is_main:  # rank 0 wrote the checkpoint
            _log.warning("%s; %s; continue with: %s", why, self._describe_last_good(), command)

    def _train(self) -> None:
        epochs = self.resolved.epochs
        for epoch in range(self.start_epoch, epochs):
            p = self._resume_progress
            done = p.batch if p is not None and p.epoch == epoch else 0
            bar = tqdm(total=len(self.train_loader), initial=done, leave=False,
                       desc=f"epoch {epoch + 1}/{epochs}",
                       disable=not (self.cfg.progress and self.world.is_main))
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            metrics: dict[str, Any] = dict(self.train_epoch(epoch, bar))
            broadcast_buffers(self.model, self.world)  # every rank evaluates rank 0's model
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            assert self._progress is not None
            seconds = self._progress.seconds + time.perf_counter() - t0
            bar.close()
            t_eval = time.perf_counter()
            try:
                with self.signals.interruptible():  # nothing to lose here: stop at once
                    metrics.update(self._evaluate_and_hooks(epoch, metrics, seconds))
            except RunInterrupted:
                self._progress.seconds = seconds
                self.save(epoch, len(self.train_loader))  # training of the epoch is done
                raise
            eval_seconds = time.perf_counter() - t_eval
            self._commit_epoch(epoch, metrics)
            self._log_summary(epoch, metrics, seconds, eval_seconds)
            self.signals.check()  # a signal during the commit: the checkpoint is written
            if self.stop_requested:
                break

    def _evaluate_and_hooks(self, epoch: int, metrics: dict[str, Any], seconds: float
                            ) -> dict[str, Any]:
        policy_metrics = _mean_over_ranks(self.policy.epoch_metrics(), self.device)
        if not self.world.is_main:  # rank 0 evaluates, runs the hooks and logs
            self.stop_requested = broadcast_object(self.stop_requested, self.world)
            return {}
        out = self.evaluate_epoch()
        n_images = len(self.train_loader) * self.cfg.batch_size
        out.update({"time/epoch_s": seconds,
                    "time/train_images_per_s": n_images / max(seconds, 1e-9),
                    "train/lr": self.optimizer.param_groups[0]["lr"]})
        out.update(policy_metrics)
        self.current_metrics = {**metrics, **out}
        for hook in self.epoch_hooks:
            out.update(hook(self, epoch))
        self.stop_requested = broadcast_object(self.stop_requested, self.world)
        return out

    def _commit_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        """Log the epoch and checkpoint its end (signals wait until this is done)."""
        assert self.tracker is not None
        tracker = self.tracker
        self.distributions.end_epoch(epoch)
        # after kill -9 between logging and checkpointing, the redone epoch is not logged twice
        logged = epoch == self._resumed_epoch and tracker.has_metric_at("train/loss", epoch)
        every, last = self.cfg.tracking.plot_every, epoch + 1 == self.resolved.epochs
        plot = every > 0 and ((epoch + 1) % every == 0 or last or self.stop_requested)
        # policy/<key>_{mean,p10,p50,p90}, distributions/<key>.json, the heat-maps
        metrics.update(log_distributions(tracker, self.distributions, epoch, log_metrics=False,
                                         plot=plot))
        if not logged:
            tracker.log_metrics(metrics, step=epoch)
        tracker.flush()
        self._progress = None
        self.save(epoch + 1)

    def _log_summary(self, epoch: int, m: dict[str, Any], seconds: float,
                     eval_seconds: float) -> None:
        keys = ("train/loss", "train/adv_acc", "test/clean_acc", "test/pgd_acc",
                "val/clean_acc", "val/pgd_acc", "monitor/test_fgsm_acc", "monitor/co")
        values = "  ".join(f"{k}={float(m[k]):.3f}" for k in keys if k in m)
        _log.info("epoch %d/%d  %s  train %.1fs  eval %.1fs", epoch + 1, self.resolved.epochs,
                  values, seconds, eval_seconds)

    def _finish(self) -> None:
        """Final evaluation (logged once per step), the model, and a final checkpoint check."""
        assert self.tracker is not None
        tracker, epochs = self.tracker, self.resolved.epochs
        with self.signals.interruptible():
            final = self.final_evaluation() if self.world.is_main else {}
        if not tracker.has_metric_at("eval/clean_acc", epochs):
            tracker.log_metrics(final, step=epochs)
        tracker.flush()
        _log.info("final  %s", "  ".join(f"{k}={v:.4f}" for k, v in final.items()))
        if self._save_failed:
            raise CheckpointWriteError(
                f"the final checkpoint could not be written; {self._describe_last_good()}: free "
                f"space and continue with: {self._resume_command()}")
        if self.cfg.tracking.log_model and self.world.is_main:
            with self.signals.interruptible():
                self._log_models(epochs)

    def _log_models(self, epochs: int) -> None:
        """The final target (and the best one, with ``monitor.keep_best``) as MLflow models."""
        assert self.tracker is not None
        example = self.test_x[:1]

        def cpu_model(weights: dict[str, torch.Tensor]) -> torch.nn.Module:
            model = make_model(self.resolved.target, self.data.image_shape, self.data.num_classes)
            model.load_state_dict(weights)
            return model.to("cpu").eval()

        try:
            uri = self.tracker.log_model(cpu_model(self.model.state_dict()), example, "model",
                                         self.cfg.tracking.register_as, step=epochs)
            self.tracker.set_tag("model_uri", uri)
            best = self.checkpoint_path(self.tracker.run_id).with_name("best.pt")
            if self.cfg.monitor.keep_best and best.exists():
                from learned_at.runners.checkpoint import load_checkpoint

                state = load_checkpoint(best)
                self.tracker.log_model(cpu_model(state["model"]), example, "best",
                                       step=int(state["epoch"]))
        except Exception as error:  # training is done: a model-store problem must not fail it
            _log.warning("logging the model failed: %s", _one_line(error))
            self._safe_tag("model_error", _one_line(error))


def _mean_over_ranks(metrics: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Each scalar's (tensor or float) mean over the torchrun ranks (one all-reduce; equal
    shards make it the global batch's mean). ``metrics`` itself for one process."""
    if world_size() == 1 or not metrics:
        return metrics
    means = all_reduce_mean(torch.stack([torch.as_tensor(v, device=device).reshape(()).float()
                                         for v in metrics.values()]))
    return dict(zip(metrics, means.unbind()))


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _resume_overrides(saved: list[str], given: list[str], run_id: str) -> list[str]:
    """The resumed run's overrides: its own, with the resume-time settings of ``given``."""
    bad = [o for o in given if not o.split("=", 1)[0].startswith(RESUME_KEYS)]
    if bad:
        raise ConfigError(
            f"resume={run_id} continues the run with its own config; {' '.join(bad)} cannot "
            f"change it (with resume= only {', '.join(k.rstrip('.') for k in RESUME_KEYS)} may "
            "be given); start a new run to change the config")
    given = [o for o in given if not o.startswith("resume=")]
    keys = {o.split("=", 1)[0] for o in given}
    return [o for o in saved if o.split("=", 1)[0] not in keys] + given


def resume(run_id: str, overrides: list[str], checkpoint_dir: str,
           tracking_uri: str | None = None) -> str:
    """Continue (or, with ``epochs=N``, re-plan) run ``run_id`` from its last checkpoint."""
    from mlflow import MlflowClient

    from learned_at.runners.tracking import get_run

    run = get_run(MlflowClient(tracking_uri), run_id)
    state = load_run_state(run_id, checkpoint_dir, tracking_uri)
    saved = [o for o in state["overrides"] if not o.startswith("resume=")]
    merged = _resume_overrides(saved, overrides, run_id)
    cfg = compose_config(merged)
    planned = resolve(compose_config(saved)).epochs
    epochs = resolve(cfg).epochs
    started = state["epoch"] + (1 if state.get("batch", 0) else 0)
    finished = run.info.status == "FINISHED"
    if finished and epochs == planned:
        raise ConfigError(f"run {run_id} finished its {planned} epochs; resume={run_id} "
                          f"epochs=N (N > {planned}) extends it")
    if epochs < started:
        raise ConfigError(f"epochs={epochs}: run {run_id} has already started {started} "
                          f"epochs; accepted epochs >= {started}")
    machine = ("progress=", "device=", "threads=")  # may differ where the run resumes
    trainer = Cotrainer(cfg, [o for o in merged if not o.startswith(machine)], tracking_uri)
    trainer.load_state(state)
    if epochs != planned:
        _log.info("run %s re-planned from %d to %d epochs", run_id, planned, epochs)
        trainer.extra_tags["epochs_replanned"] = f"{planned}->{epochs}"
    return trainer.run(run_id=run_id)


def cotrain(overrides: list[str], tracking_uri: str | None = None) -> str:
    """Compose the config (or load it from the run to resume), train, return the run id."""
    try:
        overrides = expand_recipes(list(overrides))  # a run stores what the recipe meant
    except ValueError as e:
        raise ConfigError(str(e)) from None
    given = dict(o.split("=", 1) for o in overrides if "=" in o)
    if given.get("resume") not in (None, "", "null"):  # the run's own config, checked there
        return resume(given["resume"], overrides,
                      given.get("checkpoint_dir", CotrainConfig.checkpoint_dir), tracking_uri)
    return Cotrainer(compose_config(overrides), overrides, tracking_uri).run()


class SweepJob:
    """One job of a ``-m`` sweep: a bad combination or a stop ends it with one line.

    Module-level and picklable: launchers that run jobs in other processes (submitit) pickle
    it by name. The counters only reach the caller with the in-process (basic) launcher.
    """

    def __init__(self) -> None:
        self.bad_input = 0  # jobs stopped by a usage error (exit status 2)
        self.failed = 0  # jobs that failed in training (NaN, a checkpoint that cannot be written)

    def __call__(self, cfg: CotrainConfig, overrides: list[str], tags: dict[str, str]
                 ) -> str | None:
        from learned_at.runners.cli_args import usage_errors

        try:
            return Cotrainer(cfg, overrides, tags=tags).run()
        except usage_errors() as error:
            self.bad_input += 1
            print(f"{PROG}: {' '.join(overrides)}: {_one_line(error)}", file=sys.stderr)
        except (NonFiniteError, CheckpointWriteError) as error:
            self.failed += 1
            print(f"{PROG}: {' '.join(overrides)}: {_one_line(error)}", file=sys.stderr)
        except RunInterrupted as stop:  # the whole sweep stops with the signal's status
            raise SystemExit(stop.exit_code) from None
        return None

    @property
    def exit_code(self) -> int:
        return 2 if self.bad_input else 1 if self.failed else 0


def _main(argv: list[str]) -> int:
    from learned_at.runners.config_help import (cotrain_help, pop_cfg_flag, print_configs,
                                                reject_unknown_flags)
    from learned_at.runners.sweep import sweep_combinations

    if wants_help(argv):
        print(cotrain_help([a for a in argv if "=" in a]))
        return 0
    if "recipe=list" in argv:
        print(format_recipes())
        return 0
    argv, cfg_flag = pop_cfg_flag(argv)
    multirun = "-m" in argv or "--multirun" in argv
    argv = [a for a in argv if a not in ("-m", "--multirun")]
    reject_unknown_flags(argv)
    try:
        argv = expand_recipes(argv)
    except ValueError as e:
        raise UsageError(str(e)) from None
    combinations = sweep_combinations(argv) if multirun else [argv]
    configs = [(combo, compose_config(combo)) for combo in combinations]  # all, before any work
    if cfg_flag:
        print_configs(configs)
        return 0
    if multirun:
        import learned_at.runners.cotrain as importable  # launchers pickle the job by name
        from learned_at.runners.multirun import multirun as launch, new_sweep_id

        job, sweep_id = importable.SweepJob(), new_sweep_id()
        _log.info("a sweep of %d runs, tagged sweep_id=%s", len(configs), sweep_id)
        launch(argv, job, sweep_id)
        return job.exit_code
    try:
        run_id = cotrain(argv)
    except RunInterrupted as stop:
        return stop.exit_code
    except KeyboardInterrupt:
        return 130
    except (NonFiniteError, CheckpointWriteError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    print(f"run_id={run_id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (single run, resume, ``-m`` sweep, ``--help``, ``--cfg job``).

    Under ``torchrun`` (one process per device) the process leaves the group and ends with
    :func:`os._exit` (runners/distributed.py: gloo's teardown can abort a normal exit)."""
    from learned_at.runners.distributed import exit_process, shutdown, world_from_env

    world = world_from_env()
    code = run_cli(PROG, lambda: _main(sys.argv[1:] if argv is None else list(argv)),
                   **({"log_level": logging.WARNING} if world.rank else {}))
    shutdown(world)
    return exit_process(code, world)


if __name__ == "__main__":  # python -m runners.cotrain: run the package's copy of this module
    from learned_at.runners.cotrain import main as package_main

    raise SystemExit(package_main())
