"""Co-training: a target network and an attack policy, alternating on every batch.

Usage::

    python -m runners.cotrain [group=option ...] [key=value ...]     # one run
    python -m runners.cotrain -m policy=pgd_at,fgsm_rs seed=0,1       # a sweep (Hydra multirun)
    python -m runners.cotrain resume=<run_id>                         # continue a run

Per batch: the policy attacks the batch through the env, the target takes its AT step, the
policy may learn (``policy.update``). Per epoch: test accuracy (clean, PGD-10 on a fixed
subset), the policy's choice distributions, a checkpoint. At the end: clean and PGD-20
accuracy on the whole test set. Everything goes to one MLflow run; the last line printed is
``run_id=<id>``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from agents.base import Policy, PolicyContext, StepInfo, make_policy
from envs.attack_env import AttackEnv, EnvConfig
from envs.episode import run_episode
from envs.geometry.base import make_geometry
from envs.requirements import EnvRequirements
from runners.checkpoint import CheckpointError, restore_rng_state, rng_state, save_checkpoint
from runners.co_monitor import COMonitor
from runners.config import (CotrainConfig, ConfigError, compose_config, config_to_dict, plain,
                            resolve)
from runners.device import DeviceError, pick_device
from runners.distributions import DistributionHistory, log_distributions
from runners.recipes import expand_recipes, format_recipes
from runners.robustness import evaluate
from runners.run_loading import load_run_state
from runners.schedule import make_scheduler
from runners.tracking import Tracker, flatten_config
from targets.datasets import DataSet, DataSetError, load_dataset, subset_dataset
from targets.loader import Batch, DeviceLoader
from targets.losses.base import LossContext, make_at_loss
from targets.models import make_model
from targets.target import Target

CHECKPOINT_FORMAT = 2
GENERATORS = ("data", "attack", "policy")


@dataclass
class EpochAccumulator:
    """Device-side running sums of per-batch training scalars (no host sync)."""

    sums: dict[str, torch.Tensor]
    count: int = 0

    def add(self, values: dict[str, torch.Tensor]) -> None:
        for k, v in values.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.count += 1

    def means(self) -> dict[str, torch.Tensor]:
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}


class Cotrainer:
    """Owns one run's objects: data, target, AT loss, env, policy, optimiser, tracker.

    Args:
        cfg: the composed config.
        overrides: the command-line overrides it came from (stored for resume).
        tracking_uri: MLflow tracking URI (None = MLflow's default / MLFLOW_TRACKING_URI).
        data: an in-memory data set to use instead of loading ``cfg.data`` (benchmarks, tests).
    """

    def __init__(self, cfg: CotrainConfig, overrides: list[str],
                 tracking_uri: str | None = None, data: DataSet | None = None) -> None:
        self.cfg, self.overrides = cfg, list(overrides)
        self.resolved = r = resolve(cfg)
        self.device = pick_device(cfg.device)
        if data is None:
            data = load_dataset(cfg.data.name, cfg.data.root)
        self.data = subset_dataset(data, cfg.data.train_subset, cfg.data.test_subset)
        self.gens = {k: torch.Generator(device=self.device).manual_seed(cfg.seed + i)
                     for i, k in enumerate(GENERATORS)}
        self.train_loader = DeviceLoader(self.data.train, cfg.batch_size, self.device,
                                         shuffle=True, augment=r.augment, drop_last=True,
                                         generator=self.gens["data"])
        if len(self.train_loader) == 0:
            raise ConfigError(f"batch_size={cfg.batch_size} exceeds the training set "
                              f"({len(self.data.train)} samples)")
        self.test_x = self.data.test.images.to(self.device).float().div_(255)
        self.test_y = self.data.test.labels.to(self.device)
        n_sub = min(cfg.eval.test_subset, len(self.test_y))
        self.train_sub_x = self.data.train.images[:n_sub].to(self.device).float().div_(255)
        self.train_sub_y = self.data.train.labels[:n_sub].to(self.device)
        torch.manual_seed(cfg.seed)  # model initialisation is the only global-RNG consumer
        model = make_model(r.target, self.data.image_shape, self.data.num_classes)
        model.to(self.device)
        self.geometry = make_geometry(cfg.threat)
        problem = self.geometry.check_budget(r.eps, self.data.image_shape)
        if problem is not None:
            raise ConfigError(problem)
        try:  # a loss or policy that refuses the setting names the field: no traceback
            at_loss = make_at_loss(cfg.at_loss, LossContext(
                num_train=len(self.data.train), num_classes=self.data.num_classes,
                epochs=r.epochs, batches_per_epoch=len(self.train_loader), device=self.device,
                geometry=self.geometry))
            self.context = PolicyContext(
                geometry=self.geometry, eps=r.eps, image_shape=self.data.image_shape,
                num_classes=self.data.num_classes, num_train=len(self.data.train),
                epochs=r.epochs, batches_per_epoch=len(self.train_loader), device=self.device,
                attack_loss=at_loss.attack_loss, data=cfg.data.name,
                at_loss_name=cfg.at_loss.name)
            self.policy: Policy = make_policy(cfg.policy, self.context).to(self.device)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        optimizer = torch.optim.SGD(model.parameters(), lr=r.lr, momentum=cfg.optim.momentum,
                                    weight_decay=cfg.optim.weight_decay)
        scheduler = make_scheduler(optimizer, cfg.optim.schedule,
                                   r.epochs * len(self.train_loader), cfg.optim.milestones,
                                   cfg.optim.gamma, cfg.optim.cyclic_peak)
        self.target = Target(model, optimizer, scheduler, at_loss, self.make_env, cfg.bn_mode)
        self.env = self.make_env(self.policy.requirements().merge(at_loss.env_requirements))
        self.distributions = DistributionHistory()
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
        return AttackEnv(self.model, config, self.data.image_shape, self.cfg.batch_size,
                         source=self.train_loader)

    # -- checkpoints ------------------------------------------------------------------
    def checkpoint_path(self, run_id: str) -> Path:
        """Local checkpoint of a run: ``<checkpoint_dir>/<run_id>/last.pt``."""
        return Path(self.cfg.checkpoint_dir) / run_id / "last.pt"

    def state(self, next_epoch: int) -> dict[str, Any]:
        """Everything needed to continue the run exactly (weights_only-loadable)."""
        return {
            "format": CHECKPOINT_FORMAT, "overrides": self.overrides,
            "config": config_to_dict(self.cfg), "epoch": next_epoch,
            "global_step": self.global_step, **self.target.state_dict(),
            "policy": self.policy.state_dict(), "policy_extra": self.policy.extra_state(),
            "rng": rng_state(self.gens),
            "distributions": self.distributions.state_dict(),
            "image_shape": list(self.data.image_shape), "num_classes": self.data.num_classes,
            "target": self.resolved.target, "eps": self.resolved.eps,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` (the inverse, for resume)."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"checkpoint format {state.get('format')} was written by another "
                                  f"version of this project (this one reads {CHECKPOINT_FORMAT});"
                                  " start a fresh run")
        self.target.load_state_dict(state)
        self.policy.load_state_dict(state["policy"])
        self.policy.load_extra_state(state["policy_extra"])
        restore_rng_state(state["rng"], self.gens)
        self.distributions.load_state_dict(state["distributions"])
        self.start_epoch, self.global_step = state["epoch"], state["global_step"]

    def save(self, next_epoch: int) -> None:
        """Atomic local checkpoint, mirrored to the MLflow run as ``checkpoints/last.pt``."""
        assert self.tracker is not None
        path = self.checkpoint_path(self.tracker.run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, self.state(next_epoch))
        self.tracker.log_artifact(str(path), "checkpoints")

    # -- the loop ---------------------------------------------------------------------
    def train_batch(self, b: Batch, epoch: int) -> tuple[dict[str, torch.Tensor],
                                                        dict[str, torch.Tensor]]:
        """Attack one batch with the policy, take the target's AT step, let the policy learn.

        Returns:
            (training scalars, policy metrics), all device tensors (no host sync).
        """
        result = run_episode(self.env, self.policy, b.x, b.y, b.index, offsets=b.offsets,
                             flipped=b.flipped, generator=self.gens["attack"])
        inputs = self.policy.target_inputs(result)
        out = self.target.step(result, inputs)
        stats = {f"train/{k}": v for k, v in out.parts.items()}
        stats["train/adv_acc"] = (out.logits_adv.argmax(1) == b.y).float().mean()
        stats["policy/attack_success"] = 1.0 - stats["train/adv_acc"]  # misclassified after attack
        for key, values in self.policy.describe(result).items():
            self.distributions.add(key, values)
        policy_metrics = self.policy.update(
            result, self.target.view(), out,
            StepInfo(step=self.global_step, epoch=epoch, generator=self.gens["policy"]))
        self.global_step += 1
        return stats, policy_metrics or {}

    def train_epoch(self, epoch: int, bar: tqdm) -> dict[str, torch.Tensor]:
        """One pass over the training set; returns device-side epoch means."""
        acc = EpochAccumulator({})
        policy_metrics = EpochAccumulator({})
        self.policy.begin_epoch(epoch)
        for b in self.train_loader:
            stats, pm = self.train_batch(b, epoch)
            acc.add(stats)
            if pm:
                policy_metrics.add(pm)
            bar.update(1)
            if self.global_step % 10 == 0:  # host sync for the progress bar, every 10 batches
                m = acc.means()
                bar.set_postfix(loss=f"{m['train/loss'].item():.3f}",
                                adv_acc=f"{m['train/adv_acc'].item():.3f}")
        return {**acc.means(), **policy_metrics.means()}

    def evaluate_epoch(self) -> dict[str, float]:
        """Test clean accuracy, PGD on the fixed test subset, clean accuracy on a train subset."""
        n = min(self.cfg.eval.test_subset, len(self.test_y))
        steps = self.cfg.eval.epoch_pgd_steps
        res = evaluate(self.model, self.test_x[:n], self.test_y[:n], ["clean", f"pgd{steps}"],
                       self.geometry, self.resolved.eps, self.cfg.eval.batch_size,
                       torch.Generator(device=self.device).manual_seed(self.cfg.seed))
        full_clean = evaluate(self.model, self.test_x, self.test_y, ["clean"], self.geometry,
                              self.resolved.eps, self.cfg.eval.batch_size)
        train_clean = evaluate(self.model, self.train_sub_x, self.train_sub_y, ["clean"],
                               self.geometry, self.resolved.eps, self.cfg.eval.batch_size)
        return {"test/clean_acc": full_clean["clean"]["acc"],
                "test/pgd_acc": res[f"pgd{steps}"]["acc"],
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
        c, r = self.cfg, self.resolved
        name = c.run_name or f"{c.policy.name}-{c.data.name}-{r.target}"
        tags = {"policy": c.policy.name, "target": r.target, "data": c.data.name,
                "at_loss": c.at_loss.name, "threat": c.threat.name}
        tracker = Tracker(c.experiment, run_id=run_id, run_name=name, tags=tags,
                          tracking_uri=self.tracking_uri)
        if run_id is None:  # a resumed run keeps the params it was created with
            params = flatten_config(config_to_dict(c))
            params.update({f"resolved.{k}": str(plain(v)) for k, v in vars(r).items()})
            tracker.log_params(params)
            tracker.log_text(" ".join(self.overrides), "config/overrides.txt")
        return tracker

    def run(self, run_id: str | None = None) -> str:
        """Train from ``start_epoch`` to the end, evaluate, and return the MLflow run id."""
        self.tracker = tracker = self._open_tracker(run_id)
        epochs = self.resolved.epochs
        try:
            for epoch in range(self.start_epoch, epochs):
                bar = tqdm(total=len(self.train_loader), desc=f"epoch {epoch + 1}/{epochs}",
                           disable=not self.cfg.progress, leave=False)
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                metrics: dict[str, Any] = dict(self.train_epoch(epoch, bar))
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - t0
                bar.close()
                metrics.update(self.evaluate_epoch())
                n_images = len(self.train_loader) * self.cfg.batch_size
                metrics.update({"time/epoch_s": seconds,
                                "time/train_images_per_s": n_images / max(seconds, 1e-9),
                                "train/lr": self.optimizer.param_groups[0]["lr"]})
                metrics.update(self.policy.epoch_metrics())
                self.current_metrics = metrics
                for hook in self.epoch_hooks:
                    metrics.update(hook(self, epoch))
                self.distributions.end_epoch(epoch)
                tracker.log_metrics(metrics, step=epoch)
                # policy/<key>_{mean,p10,p50,p90}, distributions/<key>.json, the heat-maps
                log_distributions(tracker, self.distributions, epoch)
                tracker.flush()
                self.save(epoch + 1)
                self._print_epoch(epoch, metrics)
                if self.stop_requested:
                    break
            final = self.final_evaluation()
            tracker.log_metrics(final, step=epochs)
            tracker.flush()
            print("  ".join(f"{k}={v:.4f}" for k, v in final.items()))
        except KeyboardInterrupt:
            tracker.finish("KILLED")
            print(f"\ninterrupted; continue with: python -m runners.cotrain "
                  f"resume={tracker.run_id}", file=sys.stderr)
            raise
        except BaseException:
            tracker.finish("FAILED")
            raise
        tracker.finish("FINISHED")
        return tracker.run_id

    def _print_epoch(self, epoch: int, m: dict[str, Any]) -> None:
        if not self.cfg.progress:
            return
        keys = ("train/loss", "train/adv_acc", "test/clean_acc", "test/pgd_acc",
                "monitor/test_fgsm_acc", "monitor/co", "time/epoch_s")
        vals = "  ".join(f"{k}={float(m[k]):.3f}" for k in keys if k in m)
        tqdm.write(f"epoch {epoch + 1}/{self.resolved.epochs}  {vals}")


def cotrain(overrides: list[str], tracking_uri: str | None = None) -> str:
    """Compose the config (or load it from the run to resume), train, return the run id."""
    try:
        overrides = expand_recipes(list(overrides))  # a run stores what the recipe meant
    except ValueError as e:
        raise ConfigError(str(e)) from None
    cfg = compose_config(overrides)
    if cfg.resume:
        state = load_run_state(cfg.resume, cfg.checkpoint_dir, tracking_uri)
        saved = [o for o in state["overrides"] if not o.startswith(("progress=", "device="))]
        extra = [o for o in overrides if o.startswith(("progress=", "device="))]
        trainer = Cotrainer(compose_config(saved + extra), saved, tracking_uri)
        trainer.load_state(state)
        return trainer.run(run_id=cfg.resume)
    return Cotrainer(cfg, overrides, tracking_uri).run()


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (single run, resume, or ``-m`` multirun through Hydra's sweeper)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "recipe=list" in argv:
        print(format_recipes())
        return 0
    if "-m" in argv or "--multirun" in argv:
        try:
            argv = expand_recipes(argv)
        except ValueError as e:
            print(f"runners.cotrain: {e}", file=sys.stderr)
            return 2
        from runners.multirun import multirun

        return multirun([a for a in argv if a not in ("-m", "--multirun")],
                        lambda cfg, overrides: Cotrainer(compose_config(overrides),
                                                         overrides).run())
    try:
        run_id = cotrain(argv)
    except (ConfigError, DataSetError, CheckpointError, DeviceError) as e:  # bad input: message, no traceback
        print(f"runners.cotrain: {e}", file=sys.stderr)
        return 2
    print(f"run_id={run_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
