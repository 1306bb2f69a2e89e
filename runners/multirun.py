"""Hydra multirun (``python -m runners.cotrain -m a=1,2 b=x,y``): one co-training per combination."""

from __future__ import annotations

import sys
from collections.abc import Callable

import hydra
from omegaconf import DictConfig

from runners.config import CotrainConfig, register_configs, to_object

#: one job of the sweep: (config, its overrides) -> MLflow run id.
Job = Callable[[CotrainConfig, list[str]], str]

_HYDRA_QUIET = ["hydra/job_logging=disabled", "hydra/hydra_logging=disabled",
                "hydra.output_subdir=null", "hydra.sweep.dir=multirun/${now:%Y-%m-%d_%H-%M-%S}"]


def multirun(overrides: list[str], job: Job) -> int:
    """Run Hydra's basic sweeper over ``overrides`` (Hydra sweep syntax), ``job`` per point."""

    def task(cfg: DictConfig) -> None:
        from hydra.core.hydra_config import HydraConfig

        run_id = job(to_object(cfg), list(HydraConfig.get().overrides.task))
        print(f"run_id={run_id}")

    register_configs()
    argv0 = sys.argv[:1] or ["runners.cotrain"]
    sys.argv = [*argv0, "--multirun", *overrides, *_HYDRA_QUIET]
    hydra.main(config_path=None, config_name="cotrain", version_base=None)(task)()
    return 0
