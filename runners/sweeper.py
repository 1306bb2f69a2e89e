"""Sweeps: ``python -m runners.cotrain -m a=1,2 b=x,y [hydra/launcher=...]``.

Hydra expands the grid and a Hydra *launcher* runs its jobs: the basic launcher (one after
another in this process) by default, or, for a cluster, the submitit launcher plugin (extra
``cluster``: ``pip install -e ".[cluster]"``), which submits every job to SLURM or runs them as
local subprocesses with the same code path::

    python -m runners.cotrain -m policy=pgd_at,fgsm_rs seed=0,1 hydra/launcher=submitit_slurm \\
        hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1 hydra.launcher.timeout_min=600
    python -m runners.cotrain -m policy=pgd_at,fgsm_rs hydra/launcher=submitit_local

:class:`CheckedSweeper` is the project's Hydra sweeper (a plugin through Hydra's public
``Sweeper`` interface, registered with ``Plugins.register``): the grid of Hydra's basic sweeper
(``a=1,2``, ``range(0,3)``, ``choice(...)``, ``glob(...)``), with two additions:

* every combination is composed *and checked* (the task function's ``check_config``: ranges,
  options, budgets) before the first job starts, so a bad value anywhere in the grid is one
  line before any training, not a failure in the middle of the sweep;
* the task function's jobs return their exit status: a bad combination found only when it
  runs (2) or a failed run (1) does not stop the others, and the sweep exits with the worst;
  the task's ``summarize_sweep`` prints the grid's outcome at the end;
* every job gets ``tracking.sweep_id=<id>`` (printed first, also the name of the sweep's folder
  ``multirun/<id>``), so one filter finds the grid wherever its jobs ran::

      python -m runners.compare sweep_id=<id>

Jobs on other machines must reach the same tracking store: set ``MLFLOW_TRACKING_URI`` to a
tracking server (README, "Team tracking server"); a local sqlite file only works when all jobs
share its filesystem.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, read_write

__all__ = ["CheckedSweeper", "SWEEP_TAG", "SweeperConf", "compare_command", "new_sweep_id",
           "sweep_combinations", "sweep_runs"]

SWEEP_TAG = "sweep_id"
"""Run tag holding the sweep's id (the same value on every run of one multirun)."""


@dataclass
class SweeperConf:
    """``hydra/sweeper=learned_at``: the project's sweeper (no settings of its own)."""

    _target_: str = "learned_at.runners.sweeper.CheckedSweeper"


def new_sweep_id() -> str:
    """A sortable, unique sweep id: ``<UTC date>-<time>-<6 hex>``."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


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
    """Every combination of a sweep's overrides, in Hydra's order (one override list each).

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


class CheckedSweeper(Sweeper):
    """The grid sweeper that checks every combination first (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.check: Callable[[DictConfig], Any] | None = None
        self.summarize: Callable[[str], str] | None = None
        self.sweep_id = ""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.check = getattr(task_function, "check_config", None)
        self.summarize = getattr(task_function, "summarize_sweep", None)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        assert self.hydra_context is not None and self.config is not None
        loader = self.hydra_context.config_loader
        self.sweep_id = new_sweep_id()
        if not any(o.startswith("hydra.sweep.dir=") for o in self.config.hydra.overrides.hydra):
            with read_write(self.config.hydra):  # the launcher reads it when it launches
                self.config.hydra.sweep.dir = f"multirun/{self.sweep_id}"
        jobs = [[*combo, f"tracking.{SWEEP_TAG}={self.sweep_id}"]
                for combo in sweep_combinations(arguments, loader)]
        for job in jobs:  # compose and check every job before the first one runs
            composed = loader.load_sweep_config(master_config=self.config,
                                                sweep_overrides=list(job))
            if self.check is not None:
                self.check(composed)
        print(f"{SWEEP_TAG}={self.sweep_id}", flush=True)
        results = self.launcher.launch(jobs, initial_job_idx=0)
        codes = [r.return_value for r in results]  # raises a job's unexpected exception
        if self.summarize is not None:
            print(self.summarize(self.sweep_id), flush=True)
        code = 2 if 2 in codes else max((c for c in codes if isinstance(c, int)), default=0)
        if code:  # a job stopped on bad input (2) or failed (1): the sweep's exit status
            raise SystemExit(code)
        return results


Plugins.instance().register(CheckedSweeper)
