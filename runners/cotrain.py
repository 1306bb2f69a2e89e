"""``python -m runners.cotrain``: co-train a target network and an attack policy.

Usage::

    python -m runners.cotrain [group=option ...] [key=value ...]     # one run
    python -m runners.cotrain -m policy=pgd_at,fgsm_rs seed=0,1       # a sweep (Hydra multirun)
    python -m runners.cotrain resume=<run_id> [epochs=N]              # continue (or extend) a run
    python -m runners.cotrain --help | --cfg job                      # fields and defaults / config

One MLflow run per co-training; the last line printed is ``run_id=<id>``. The loop is
:func:`runners.train.train`; this module opens the run, trains, evaluates the final target
(:func:`runners.train.final_evaluation`, logged once per step), logs it as an MLflow model and
ends the run: ``FINISHED``; ``KILLED`` after a stop signal or Ctrl-C (with its resume command in
the tag ``resume_command``, exit status 128 + signal); ``FAILED`` on a NaN (exit status 1) or
when the final checkpoint cannot be written.

Checkpoints (``<checkpoint_dir>/<run id>/last.pt``, mirrored to the run's
``checkpoints/last.pt``) hold the exact position, also inside an epoch, so ``resume=<id>``
continues as the uninterrupted run would have (:mod:`runners.resume`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from learned_at.runners.checkpoint import Checkpointer, Position, one_line, safe_tag
from learned_at.runners.cli import USAGE_ERRORS, exit_on_error, run_cli
from learned_at.runners.compose import compose_config, to_config
from learned_at.runners.config import config_to_dict
from learned_at.runners.config_store import CONFIG_NAME, register_configs
from learned_at.runners.distributed import (NullTracker, broadcast_object, exit_process, shutdown,
                                            world_from_env)
from learned_at.runners.preemption import RunInterrupted, StopSignals
from learned_at.runners.resume import Resumed, resume_id, resume_run
from learned_at.runners.run import Run, build_run
from learned_at.runners.run_naming import resolved_yaml, run_name
from learned_at.runners.sweeper import SWEEP_TAG
from learned_at.runners.run_store import flatten_config
from learned_at.runners.tracking import Tracker
from learned_at.runners.train import NonFiniteError, final_evaluation, train
from learned_at.targets.datasets import DataSet

__all__ = ["CheckpointWriteError", "PROG", "cotrain", "main"]

PROG = "runners.cotrain"
_log = logging.getLogger(__name__)


class CheckpointWriteError(RuntimeError):
    """The final checkpoint could not be written (the run stays resumable from the last one)."""


def cotrain(overrides: Sequence[str], tracking_uri: str | None = None, *,
            data: DataSet | None = None) -> str:
    """Co-train the run of ``overrides`` (or continue it, with ``resume=<id>``); returns the
    MLflow run id. ``data``: an in-memory data set instead of ``data=`` (tests, benchmarks)."""
    if resume_id(overrides):
        resumed = resume_run(overrides, tracking_uri)
        return execute(resumed.run, tracking_uri, resumed)
    return execute(build_run(compose_config(overrides), overrides, data), tracking_uri)


def execute(run: Run, tracking_uri: str | None = None, resumed: Resumed | None = None,
            tags: dict[str, str] | None = None) -> str:
    """Train ``run`` (from a resumed position, if given), evaluate, log the model; returns the
    run id (``tags``: extra tags of a new run, e.g. a sweep's ``sweep_id``). See the module
    docstring for how a run ends."""
    tracker = open_tracker(run, tracking_uri, resumed, tags)
    checkpoints = Checkpointer(run.config.checkpoint_dir, tracker, write=run.world.is_main)
    position = resumed.position if resumed else Position()
    if resumed and run.monitor is not None and run.world.is_main:
        run.monitor.restore(_monitor_history(tracker), position.epoch)
    signals = StopSignals()
    try:
        with signals:
            train(run, tracker, position, checkpoints, signals)
            _finish(run, tracker, checkpoints, signals)
    except (RunInterrupted, KeyboardInterrupt) as stop:
        safe_tag(tracker, "resume_command", resume_command(run, tracker.run_id))
        tracker.finish("KILLED")
        if run.world.is_main:
            why = (f"stopped by signal {stop.signum}" if isinstance(stop, RunInterrupted)
                   else "interrupted")
            _log.warning("%s; %s; continue with: %s", why, checkpoints.describe_last_good(),
                         resume_command(run, tracker.run_id))
        raise
    except (NonFiniteError, CheckpointWriteError) as error:
        safe_tag(tracker, "failure", str(error))
        if isinstance(error, CheckpointWriteError):
            safe_tag(tracker, "resume_command", resume_command(run, tracker.run_id))
        tracker.finish("FAILED")
        raise
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish("FINISHED")
    return tracker.run_id


def open_tracker(run: Run, tracking_uri: str | None, resumed: Resumed | None = None,
                 tags: dict[str, str] | None = None) -> Any:
    """The run's tracker: a new MLflow run with the resolved config as params and artifacts,
    or the resumed one. Under torchrun rank 0 writes MLflow, the others hold its run id."""
    if not run.world.is_main:
        return NullTracker(broadcast_object(None, run.world))
    c = run.config
    tags = {"policy": c.policy.name, "target": c.target.name, "data": c.data.name,
            "at_loss": c.at_loss.name, "threat": c.threat.name, **(tags or {})}
    if resumed is not None and resumed.replanned:
        tags["epochs_replanned"] = resumed.replanned
    tracker = Tracker(c.experiment, run_id=resumed.run_id if resumed else None,
                      run_name=c.run_name or run_name(run), tags=tags, tracking_uri=tracking_uri,
                      system_metrics=c.tracking.system_metrics,
                      system_metrics_interval_s=c.tracking.system_metrics_interval_s)
    if resumed is None:  # a resumed run keeps the params it was created with
        tracker.log_params(flatten_config(config_to_dict(c)))
        tracker.log_text(" ".join(run.overrides), "config/overrides.txt")
        tracker.log_text(resolved_yaml(c), "config/resolved.yaml")
    broadcast_object(tracker.run_id, run.world)
    return tracker


def resume_command(run: Run, run_id: str) -> str:
    """The command that continues ``run_id``."""
    folder = run.config.checkpoint_dir
    extra = "" if folder == "checkpoints" else f" checkpoint_dir={folder}"
    return f"python -m runners.cotrain resume={run_id}{extra}"


def _finish(run: Run, tracker: Any, checkpoints: Checkpointer, signals: StopSignals) -> None:
    """The final evaluation (logged once per step), a final-checkpoint check, the model."""
    with signals.interruptible():
        final = final_evaluation(run) if run.world.is_main else {}
    if not tracker.has_metric_at("eval/clean_acc", run.epochs):
        tracker.log_metrics(final, step=run.epochs)
    tracker.flush()
    _log.info("final  %s", "  ".join(f"{k}={v:.4f}" for k, v in final.items()))
    if checkpoints.failed:
        raise CheckpointWriteError(
            f"the final checkpoint could not be written; {checkpoints.describe_last_good()}: "
            f"free space and continue with: {resume_command(run, tracker.run_id)}")
    if run.config.tracking.log_model and run.world.is_main:
        with signals.interruptible():
            _log_models(run, tracker, checkpoints)


def _log_models(run: Run, tracker: Any, checkpoints: Checkpointer) -> None:
    """The final target (and the best one, with ``monitor.keep_best``) as MLflow models."""
    from learned_at.runners.checkpoint import load_checkpoint
    from learned_at.targets.models import make_model

    def cpu_model(weights: dict[str, Any]) -> Any:
        model = make_model(run.config.target.name, run.data.image_shape, run.data.num_classes)
        model.load_state_dict(weights)
        return model.to("cpu").eval()

    example = run.test.x[:1]
    try:
        uri = tracker.log_model(cpu_model(run.target.model.state_dict()), example, "model",
                                run.config.tracking.register_as or None, step=run.epochs)
        tracker.set_tag("model_uri", uri)
        best = checkpoints.path.with_name("best.pt")
        if run.config.monitor.keep_best and best.exists():
            state = load_checkpoint(best)
            tracker.log_model(cpu_model(state["model"]), example, "best",
                              step=int(state["epoch"]))
    except Exception as error:  # training is done: a model-store problem must not fail it
        _log.warning("logging the model failed: %s", one_line(error))
        safe_tag(tracker, "model_error", one_line(error))


def _monitor_history(tracker: Any) -> dict[str, dict[int, float]]:
    return {key: {m.step: m.value for m in tracker.client.get_metric_history(tracker.run_id, key)}
            for key in ("monitor/test_pgd_acc", "monitor/test_fgsm_acc")}


# ------------------------------------------------------------------------------------ the command

def _tracking_uri() -> str | None:
    return os.environ.get("MLFLOW_TRACKING_URI") or None


def _job(cfg: DictConfig) -> int:
    """Hydra's task: one run (or one job of a sweep, which reports its exit status)."""
    overrides = list(HydraConfig.get().overrides.task)
    if HydraConfig.get().mode is not RunMode.MULTIRUN:  # one run
        run_id = exit_on_error(PROG, lambda: cotrain_from(cfg, overrides),
                               (NonFiniteError, CheckpointWriteError))
        print(f"run_id={run_id}")
        return 0
    tags = {SWEEP_TAG: Path(HydraConfig.get().sweep.dir).name}  # the sweep's id: its folder
    try:  # one job of a sweep: a bad combination or a failure ends it with one line
        print(f"run_id={cotrain_from(cfg, overrides, tags)}", flush=True)
        return 0
    except USAGE_ERRORS as error:
        print(f"{PROG}: {' '.join(overrides)}: {one_line(error)}", file=sys.stderr)
        return 2
    except (NonFiniteError, CheckpointWriteError) as error:
        print(f"{PROG}: {' '.join(overrides)}: {one_line(error)}", file=sys.stderr)
        return 1
    except RunInterrupted as stop:  # the whole sweep stops with the signal's status
        raise SystemExit(stop.exit_code) from None


_task = hydra.main(config_path=None, config_name=CONFIG_NAME, version_base="1.3")(_job)


def cotrain_from(cfg: DictConfig, overrides: list[str], tags: dict[str, str] | None = None
                 ) -> str:
    """Co-train the run Hydra composed (``overrides``: its command line)."""
    return execute(build_run(to_config(cfg), overrides), _tracking_uri(), tags=tags)


def main() -> int:
    """Console-script entry point (``lat-cotrain``): one run, a resume, a ``-m`` sweep,
    ``--help``, ``--cfg job``; returns the exit status.

    Under ``torchrun`` (one process per device) the process leaves the group and ends with
    :func:`os._exit` (runners/distributed.py: gloo's teardown can abort a normal exit).
    """
    register_configs()
    world = world_from_env()
    task = _task
    if resume_id(sys.argv[1:]):  # composed on top of the run's own command line
        def task() -> None:
            run_id = exit_on_error(PROG, lambda: cotrain(sys.argv[1:], _tracking_uri()),
                                   (NonFiniteError, CheckpointWriteError))
            print(f"run_id={run_id}")
    code = run_cli(PROG, task, CONFIG_NAME, failures=(NonFiniteError, CheckpointWriteError),
                   **({"log_level": logging.WARNING} if world.rank else {}))
    shutdown(world)
    return exit_process(code, world)


if __name__ == "__main__":
    raise SystemExit(main())
