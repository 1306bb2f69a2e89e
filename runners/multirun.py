"""Hydra multirun (``python -m runners.cotrain -m a=1,2 b=x,y``): one co-training per combination."""

from __future__ import annotations

import sys
from collections.abc import Callable

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from runners.config import CotrainConfig, register_configs, to_object

#: one job of the sweep: (config, its overrides) -> MLflow run id (None: the job failed).
Job = Callable[[CotrainConfig, list[str]], "str | None"]

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
                "hydra.output_subdir=null", "hydra.sweep.dir=multirun/${now:%Y-%m-%d_%H-%M-%S}"]


def multirun(overrides: list[str], job: Job) -> int:
    """Run Hydra's basic sweeper over ``overrides`` (Hydra sweep syntax), ``job`` per point."""

    def task(cfg: DictConfig) -> None:
        from hydra.core.hydra_config import HydraConfig

        run_id = job(to_object(cfg), list(HydraConfig.get().overrides.task))
        if run_id is not None:
            print(f"run_id={run_id}", flush=True)

    register_configs()
    ConfigStore.instance().store(group="hydra/hydra_logging", name="learned_at",
                                 node=HYDRA_LOGGING)
    argv0 = sys.argv[:1] or ["runners.cotrain"]
    sys.argv = [*argv0, "--multirun", *overrides, *_HYDRA_QUIET]
    hydra.main(config_path=None, config_name="cotrain", version_base=None)(task)()
    return 0
