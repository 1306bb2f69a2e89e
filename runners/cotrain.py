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

One writer per run (:mod:`runners.run_writer`): a new run takes its lock and lease right after
it is created, a resume before it loads the checkpoint; a second writer stops there with one
line naming the holder (exit status 2). When the tracking server refuses a request or does not
answer through MLflow's retries, the run stops after a checkpoint that holds what was not
logged, with one line naming the cause and the resume command (exit status 2; the run stays
``RUNNING`` in MLflow), and ``resume=<id>`` sends that record first and continues.
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
from learned_at.runners.config import TrackingConfig, config_to_dict
from learned_at.runners.config_store import CONFIG_NAME, register_configs
from learned_at.runners.distributed import (NullTracker, broadcast_object, exit_process, shutdown,
                                            world_from_env)
from learned_at.runners.preemption import RunInterrupted, StopSignals
from learned_at.runners.resume import Resumed, checkpoint_folder, resume_id, resume_run
from learned_at.runners.run import Run, build_run
from learned_at.runners.run_writer import RunWriter, WriterLostError, claim_run
from learned_at.runners.run_naming import resolved_yaml, run_name
from learned_at.runners.sweeper import SWEEP_TAG
from learned_at.runners.run_store import flatten_config
from learned_at.runners.tracking import Tracker
from learned_at.runners.tracking_errors import TrackingAccessError, TrackingUnavailableError
from learned_at.runners.train import NonFiniteError, final_evaluation, log_epoch, train
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
    run_id = resume_id(overrides)
    if run_id:  # the writer's lock and lease first, before any work on the run
        writer = (claim_run(run_id, checkpoint_folder(overrides), tracking_uri,
                            _lease_seconds(overrides))
                  if world_from_env().is_main else None)
        try:
            resumed = resume_run(overrides, tracking_uri)
        except BaseException:
            if writer is not None:
                writer.release()
            raise
        return execute(resumed.run, tracking_uri, resumed, writer=writer)
    return execute(build_run(compose_config(overrides), overrides, data), tracking_uri)


def execute(run: Run, tracking_uri: str | None = None, resumed: Resumed | None = None,
            tags: dict[str, str] | None = None, writer: RunWriter | None = None) -> str:
    """Train ``run`` (from a resumed position, if given), evaluate, log the model; returns the
    run id (``tags``: extra tags of a new run, e.g. a sweep's ``sweep_id``; ``writer``: the
    resumed run's lock and lease, taken by :func:`cotrain`). See the module docstring for how
    a run ends."""
    try:
        tracker = open_tracker(run, tracking_uri, resumed, tags)
        if writer is None and resumed is None and run.world.is_main:
            writer = _claim_new_run(run, tracker, tracking_uri)
    except BaseException:
        if writer is not None:
            writer.release()
        raise
    if writer is not None:
        writer.set_ttl(run.config.tracking.lease_s)
    checkpoints = Checkpointer(run.config.checkpoint_dir, tracker, write=run.world.is_main,
                               writer=writer)
    position = resumed.position if resumed else Position()
    signals = StopSignals()
    try:
        with signals:
            if resumed is not None:
                _continue_record(run, tracker, resumed)
            train(run, tracker, position, checkpoints, signals)
            _finish(run, tracker, checkpoints, signals)
    except (TrackingAccessError, WriterLostError) as error:
        tracker.abandon()
        if writer is not None and isinstance(error, TrackingUnavailableError):
            writer.release(tell_server=False)  # each request would wait through the retries
        raise _stopped(error, run, tracker.run_id, checkpoints) from None
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
    else:
        tracker.finish("FINISHED")
    finally:  # after the run's status is set
        if writer is not None:
            writer.release()
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


def _claim_new_run(run: Run, tracker: Any, tracking_uri: str | None) -> RunWriter:
    """The lock and lease of a run just created (a failure ends it as FAILED)."""
    try:
        return claim_run(tracker.run_id, run.config.checkpoint_dir, tracking_uri,
                         run.config.tracking.lease_s)
    except BaseException:
        tracker.finish("FAILED")
        raise


def _lease_seconds(overrides: Sequence[str]) -> float:
    """``tracking.lease_s=`` of a resume's command line (the run's own value applies from the
    first renewal on), else the default."""
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("tracking.lease_s=")]
    try:
        return float(given[-1]) if given else TrackingConfig.lease_s
    except ValueError:
        return TrackingConfig.lease_s  # the config check names the bad value


def _continue_record(run: Run, tracker: Any, resumed: Resumed) -> None:
    """Before a resumed run trains on: the epoch record a tracking outage left in the
    checkpoint, then the CO monitor's history (read back from MLflow)."""
    if resumed.unlogged is not None:
        record = resumed.unlogged
        log_epoch(run, tracker, int(record["epoch"]), dict(record["metrics"]),
                  bool(record["plot"]), redone=True)
        _log.info("sent epoch %d's record, kept in the checkpoint during the tracking outage",
                  int(record["epoch"]) + 1)
    if run.monitor is not None and run.world.is_main:
        run.monitor.restore(_monitor_history(tracker), resumed.position.epoch)


def _stopped(error: BaseException, run: Run, run_id: str, checkpoints: Checkpointer
             ) -> BaseException:
    """``error`` with what happened to the run and how to continue it, in one line."""
    if isinstance(error, WriterLostError):
        return error
    last = (checkpoints.describe_last_good() if checkpoints.last_good
            else "the checkpoint it continued from is unchanged")
    return type(error)(f"{error}; run {run_id} stopped, {last}; once that is fixed, continue "
                       f"with: {resume_command(run, run_id)} (it logs what this process could "
                       "not)")


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


MODEL_EXAMPLES = 2
"""Samples in the logged model's input example (at least 2: the batch dimension stays dynamic)."""


def _log_models(run: Run, tracker: Any, checkpoints: Checkpointer) -> None:
    """The final target (and the best one, with ``monitor.keep_best``) as MLflow models."""
    from learned_at.runners.checkpoint import load_checkpoint
    from learned_at.targets.models import make_model

    def cpu_model(weights: dict[str, Any]) -> Any:
        model = make_model(run.config.target.name, run.data.image_shape, run.data.num_classes)
        model.load_state_dict(weights)
        return model.to("cpu").eval()

    example = run.test.x[:MODEL_EXAMPLES]
    try:
        uri = tracker.log_model(cpu_model(run.target.model.state_dict()), example, "model",
                                run.config.tracking.register_as or None, step=run.epochs)
        tracker.set_tag("model_uri", uri)
        best = checkpoints.path.with_name("best.pt")
        if run.config.monitor.keep_best and best.exists():
            state = load_checkpoint(best)
            tracker.log_model(cpu_model(state["model"]), example, "best",
                              step=int(state["epoch"]))
    except TrackingUnavailableError:  # the server is down: the resume logs the model
        raise
    except Exception as error:  # training is done: a model-store problem must not fail it
        _log.warning("logging the model failed: %s", one_line(error))
        safe_tag(tracker, "model_error", one_line(error))


def _monitor_history(tracker: Any) -> dict[str, dict[int, float]]:
    from learned_at.runners.tracking_errors import explained_requests

    with explained_requests(tracker.tracking_uri, f"reading run {tracker.run_id}"):
        return {key: {m.step: m.value
                      for m in tracker.client.get_metric_history(tracker.run_id, key)}
                for key in ("monitor/test_pgd_acc", "monitor/test_fgsm_acc")}


# ------------------------------------------------------------------------------------ the command

def _tracking_uri() -> str | None:
    return os.environ.get("MLFLOW_TRACKING_URI") or None


def _job(cfg: DictConfig) -> int:
    """Hydra's task: one run (or one job of a sweep, which reports its exit status)."""
    overrides = list(HydraConfig.get().overrides.task)
    if HydraConfig.get().mode is not RunMode.MULTIRUN:  # one run
        run_id = exit_on_error(PROG, lambda: cotrain_from(cfg, overrides),
                               (NonFiniteError, CheckpointWriteError), _tracking_uri())
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
                                   (NonFiniteError, CheckpointWriteError), _tracking_uri())
            print(f"run_id={run_id}")
    code = run_cli(PROG, task, CONFIG_NAME, failures=(NonFiniteError, CheckpointWriteError),
                   **({"log_level": logging.WARNING} if world.rank else {}))
    shutdown(world)
    return exit_process(code, world)


if __name__ == "__main__":
    raise SystemExit(main())
