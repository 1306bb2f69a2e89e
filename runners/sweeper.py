"""Sweeps: ``python -m runners.cotrain -m a=1,2 b=x,y [hydra/launcher=...]``.

Hydra's basic sweeper expands the grid (``a=1,2``, ``range(0,3)``, ``choice(...)``,
``glob(...)``) and a Hydra *launcher* runs its jobs: the basic launcher (one after another in
this process) by default, or, for a cluster, the submitit launcher plugin (extra ``cluster``:
``pip install -e ".[cluster]"``), which submits every job to SLURM or runs them as local
subprocesses with the same code path::

    python -m runners.cotrain -m policy=pgd_at,fgsm_rs seed=0,1 hydra/launcher=submitit_slurm \\
        hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1 hydra.launcher.timeout_min=600
    python -m runners.cotrain -m policy=pgd_at,fgsm_rs hydra/launcher=submitit_local

:class:`SweepCallback` (a Hydra callback, Hydra's public extension point for this) adds what the
project's sweeps promise:

* every combination is composed *and checked* (ranges, options, budgets:
  :func:`runners.compose.to_config`) before the first job starts, so a bad value anywhere in
  the grid is one line and exit status 2 before any training, not a failure mid-sweep;
* the sweep gets an id (``<UTC date>-<time>-<6 hex>``, printed first) that names its folder
  ``multirun/<id>`` (unless ``hydra.sweep.dir=`` is given: then that folder's name is the id),
  and every run of the sweep carries it as the tag ``sweep_id``, so one command finds the grid
  wherever its jobs ran: ``python -m runners.compare sweep_id=<id>``;
* a job stopped by bad input found only when it runs (exit status 2) or by a failure (1)
  does not stop the others; the sweep ends with one summary line and the worst status.

Jobs on other machines must reach the same tracking store: set ``MLFLOW_TRACKING_URI`` to a
tracking server (README, "Team tracking server"); a local sqlite file only works when all jobs
share its filesystem.
"""

from __future__ import annotations

import itertools
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

__all__ = ["SWEEP_TAG", "SweepCallback", "compare_command",
           "new_sweep_id", "sweep_combinations", "sweep_runs"]

SWEEP_TAG = "sweep_id"
"""Run tag holding the sweep's id (the same value on every run of one multirun)."""


def new_sweep_id() -> str:
    """A sortable, unique sweep id: ``<UTC date>-<time>-<6 hex>``."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def _prepare_tracking_store() -> None:
    """Create (or migrate) the tracking store's schema once, before jobs start in parallel:
    jobs that each open a fresh sqlite store race on its schema migration (measured:
    ``table _alembic_tmp_experiments already exists``); touching it here also fails fast when
    a tracking server is unreachable."""
    import os

    from mlflow import MlflowClient

    MlflowClient(os.environ.get("MLFLOW_TRACKING_URI") or None).search_experiments(max_results=1)


def compare_command(sweep_id: str) -> str:
    """The command that tabulates a sweep's runs."""
    return f"python -m runners.compare {SWEEP_TAG}={sweep_id}"


def sweep_runs(sweep_id: str, tracking_uri: str | None = None) -> list[Any]:
    """The MLflow runs of one sweep, in every experiment of the store (oldest first)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=f"tags.{SWEEP_TAG} = '{sweep_id}'",
                              max_results=5000, order_by=["attributes.start_time ASC"])


def sweep_combinations(arguments: Sequence[str], config_loader: Any = None) -> list[list[str]]:
    """Every combination of a sweep's overrides, in the basic sweeper's order.

    Raises:
        HydraException: a sweep kind a grid cannot expand (intervals are for optimisers).
    """
    parser = OverridesParser.create(config_loader=config_loader)
    axes = []
    for override in parser.parse_overrides(list(arguments)):
        key = override.get_key_element()
        if not override.is_sweep_override():
            axes.append([f"{key}={override.get_value_element_as_str()}"])
        elif override.is_discrete_sweep():
            axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            raise HydraException(f"a -m sweep expands lists, range() and choice(); {key} is an "
                                 "interval sweep (for hyper-parameter optimisers)")
    return [list(combination) for combination in itertools.product(*axes)]


class SweepCallback(Callback):
    """The project's sweep bookkeeping (module docstring); inert in a single run.

    Args:
        command: the command's name in messages (``runners.cotrain``).
    """

    def __init__(self, command: str = "runners.cotrain") -> None:
        self.command = command
        self.sweep_id = ""
        self.codes: list[int] = []

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from learned_at.runners.cli import USAGE_ERRORS
        from learned_at.runners.compose import explain, to_config

        hydra_overrides = list(config.hydra.overrides.hydra)
        if any(o.startswith("hydra.sweep.dir=") for o in hydra_overrides):
            self.sweep_id = Path(config.hydra.sweep.dir).name
        else:
            self.sweep_id = new_sweep_id()
            with read_write(config.hydra):  # every job's config is composed with these
                config.hydra.sweep.dir = f"multirun/{self.sweep_id}"
                config.hydra.overrides.hydra.append(f"hydra.sweep.dir={config.hydra.sweep.dir}")
        loader = GlobalHydra.instance().config_loader()
        task = list(config.hydra.overrides.task)
        try:  # compose and check every job before the first one runs
            for combination in sweep_combinations(task, loader):
                job = loader.load_sweep_config(config, combination)
                with read_write(job), open_dict(job):
                    del job["hydra"]  # as Hydra hands a job its config
                to_config(job)
        except USAGE_ERRORS as error:
            self._stop(str(error))
        except Exception as error:  # Hydra's and OmegaConf's composition errors
            self._stop(explain(error, task))
        _prepare_tracking_store()
        print(f"{SWEEP_TAG}={self.sweep_id}", flush=True)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if self.sweep_id:  # a job of this process's sweep (the basic launcher)
            ok = job_return.status == JobStatus.COMPLETED
            value = job_return.return_value if ok else None
            self.codes.append(value if isinstance(value, int) else (0 if ok else 1))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        import os

        uri = os.environ.get("MLFLOW_TRACKING_URI") or None
        runs = sweep_runs(self.sweep_id, uri)
        states = sorted({r.info.status for r in runs})
        counts = ", ".join(f"{sum(r.info.status == s for r in runs)} {s}" for s in states)
        print(f"sweep {self.sweep_id}: {len(runs)} runs ({counts or 'none found'}); compare "
              f"them with: {compare_command(self.sweep_id)}", flush=True)
        code = 2 if 2 in self.codes else max(self.codes, default=0)
        if not code and any(r.info.status == "FAILED" for r in runs):
            code = 1  # jobs in other processes (submitit) report through their runs
        if code:
            raise SystemExit(code)

    def _stop(self, message: str) -> None:
        print(f"{self.command}: {' '.join(message.split())}", file=sys.stderr)
        raise SystemExit(2)
