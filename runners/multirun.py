"""Sweeps: ``python -m runners.cotrain -m a=1,2 b=x,y [hydra/launcher=...]``.

Hydra's sweeper expands the grid; a Hydra *launcher* runs its jobs. The default is Hydra's
basic launcher (jobs one after another in this process). For a cluster, the submitit
launcher plugin (extra ``cluster``: ``pip install -e ".[cluster]"``) submits every job to
SLURM, or runs them as local subprocesses with the same code path::

    python -m runners.cotrain -m policy=pgd_at,fgsm_rs seed=0,1 hydra/launcher=submitit_slurm \\
        hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1 hydra.launcher.timeout_min=600
    python -m runners.cotrain -m policy=pgd_at,fgsm_rs hydra/launcher=submitit_local

Every run of a sweep carries the tag ``sweep_id`` (printed first, also the name of the sweep's
folder ``multirun/<sweep_id>`` unless ``hydra.sweep.dir=`` is given), so one filter finds the
grid wherever its jobs ran::

    python -m runners.compare filter="tags.sweep_id = '<sweep_id>'"

Jobs on other machines must reach the same tracking store: set ``MLFLOW_TRACKING_URI`` to a
tracking server (README, "Team tracking server"); a local sqlite file only works when all
jobs share its filesystem. Launchers that run jobs elsewhere pickle the job function, so it
must be importable (a module-level function), not a lambda of ``__main__``.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from learned_at.runners.config import CotrainConfig, register_configs, to_object

if TYPE_CHECKING:
    from mlflow.entities import Run

#: one job of the sweep: (config, its overrides, run tags) -> MLflow run id (None: it failed).
Job = Callable[[CotrainConfig, list[str], dict[str, str]], "str | None"]

SWEEP_TAG = "sweep_id"
"""Run tag holding the sweep's id (the same value on every run of one multirun)."""

#: Hydra's own lines ("Launching 4 jobs locally", "#0 : policy=pgd_at seed=0") on stdout, so
#: each job's run_id= line follows the combination it ran; the project's logging is untouched.
HYDRA_LOGGING = {
    "version": 1,
    "formatters": {"simple": {"format": "[%(asctime)s][HYDRA] %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "simple",
                             "stream": "ext://sys.stdout"}},
    "loggers": {"hydra": {"level": "INFO", "handlers": ["console"], "propagate": False}},
    "root": {"level": "WARNING"},
    "disable_existing_loggers": False,
}
_HYDRA_QUIET = ["hydra/job_logging=none", "hydra/hydra_logging=learned_at",
                "hydra.output_subdir=null"]


def new_sweep_id() -> str:
    """A sortable, unique sweep id: ``<UTC date>-<time>-<6 hex>``."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def compare_command(sweep_id: str) -> str:
    """The command that tabulates a sweep's runs."""
    return f"python -m runners.compare filter=\"tags.{SWEEP_TAG} = '{sweep_id}'\""


def prepare_tracking_store() -> None:
    """Create (or migrate) the tracking store's schema once, before jobs start in parallel.

    Parallel jobs that each open a fresh sqlite store race on its schema migration
    (measured: ``alembic ... CommandError: Online migration expected to match one row``);
    touching it here also fails fast when a tracking server is unreachable.
    """
    from mlflow import MlflowClient

    MlflowClient().search_experiments(max_results=1)


def multirun(overrides: list[str], job: Job, sweep_id: str | None = None) -> int:
    """Run Hydra's sweeper over ``overrides`` (Hydra sweep syntax), ``job`` per point.

    Args:
        overrides: the command line without ``-m`` (``hydra/launcher=...`` picks a launcher).
        job: runs one point and returns its run id (None when it failed with a message); it
            gets ``{"sweep_id": <id>}`` as tags.
        sweep_id: the sweep's id (default: :func:`new_sweep_id`).

    Returns:
        0 (a failing job raises, as with Hydra's launchers).
    """
    sweep_id = sweep_id or new_sweep_id()
    tags = {SWEEP_TAG: sweep_id}

    def task(cfg: DictConfig) -> str | None:
        from hydra.core.hydra_config import HydraConfig

        run_id = job(to_object(cfg), list(HydraConfig.get().overrides.task), tags)
        if run_id is not None:
            print(f"run_id={run_id}", flush=True)
        return run_id

    register_configs()
    ConfigStore.instance().store(group="hydra/hydra_logging", name="learned_at",
                                 node=HYDRA_LOGGING)
    prepare_tracking_store()
    print(f"{SWEEP_TAG}={sweep_id}", flush=True)
    extra = list(_HYDRA_QUIET)
    if not any(o.startswith("hydra.sweep.dir=") for o in overrides):
        extra.append(f"hydra.sweep.dir=multirun/{sweep_id}")
    argv0 = sys.argv[:1] or ["runners.cotrain"]
    saved, sys.argv = sys.argv, [*argv0, "--multirun", *overrides, *extra]
    try:
        hydra.main(config_path=None, config_name="cotrain", version_base=None)(task)()
    finally:
        sys.argv = saved
    runs = sweep_runs(sweep_id)
    states = sorted({r.info.status for r in runs})
    counts = ", ".join(f"{sum(r.info.status == s for r in runs)} {s}" for s in states)
    print(f"sweep {sweep_id}: {len(runs)} runs ({counts or 'none found'}); compare them with: "
          f"{compare_command(sweep_id)}", flush=True)
    return 0


def sweep_runs(sweep_id: str, tracking_uri: str | None = None) -> list[Run]:
    """The MLflow runs of one sweep, in every experiment of the store (oldest first)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=f"tags.{SWEEP_TAG} = '{sweep_id}'",
                              max_results=5000, order_by=["attributes.start_time ASC"])
