"""Hydra multirun (``python -m runners.cotrain -m a=1,2 b=x,y``): one co-training per combination."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from runners.config import register_configs, to_object

_HYDRA_QUIET = ["hydra/job_logging=disabled", "hydra/hydra_logging=disabled",
                "hydra.output_subdir=null", "hydra.sweep.dir=multirun/${now:%Y-%m-%d_%H-%M-%S}"]


def _job(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from runners.cotrain import Cotrainer

    overrides = list(HydraConfig.get().overrides.task)
    run_id = Cotrainer(to_object(cfg), overrides).run()
    print(f"run_id={run_id}")


def multirun(overrides: list[str]) -> int:
    """Run Hydra's basic sweeper over ``overrides`` (Hydra sweep syntax)."""
    register_configs()
    argv0 = sys.argv[:1] or ["runners.cotrain"]
    sys.argv = [*argv0, "--multirun", *overrides, *_HYDRA_QUIET]
    hydra.main(config_path=None, config_name="cotrain", version_base=None)(_job)()
    return 0
