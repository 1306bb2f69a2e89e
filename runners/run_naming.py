"""What a co-training run is called and what it records about its settings.

* :func:`run_name`: ``<policy>-<data>-<target>`` plus the fields set on the command line and
  the seed, so runs of a sweep over seeds or budgets are told apart in MLflow's run list;
* :func:`resolved_yaml`: the resolved config — every preset filled in: the target, the budget,
  the epochs, the learning rate, the augmentation and the policy's and the AT loss's own
  presets (LAS-AT's grids, Dynamic's c_max, sTRADES' β, ...) — as the ``config/resolved.yaml``
  artifact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import yaml

from learned_at.runners.config import CotrainConfig, config_to_dict

if TYPE_CHECKING:
    from learned_at.runners.run import Run

__all__ = ["resolved_yaml", "run_name"]

_IN_BASE_NAME = ("policy", "data", "target")
_NOT_IN_NAME = ("seed", "resume", "progress", "device", "checkpoint_dir", "checkpoint_every_s",
                "experiment", "run_name", "data.root", "data.download", "tracking.", "hydra.")
MAX_NAME_LENGTH = 250


def run_name(run: Run) -> str:
    """``<policy>-<data>-<target> [key=value ...] seed=<n>`` (at most 250 characters): the
    overrides that change the method or its setting, in the order given; bookkeeping keys
    (progress, device, checkpoint_dir, tracking.*, ...) are left out."""
    cfg, fields = run.config, []
    for token in run.overrides:
        key, sep, _ = token.partition("=")
        key = key.lstrip("+~")
        if sep and key not in _IN_BASE_NAME and not key.startswith(_NOT_IN_NAME):
            fields.append(token.lstrip("+~"))
    base = f"{cfg.policy.name}-{cfg.data.name}-{cfg.target.name}"
    name = " ".join([base, *fields, f"seed={cfg.seed}"])
    return name if len(name) <= MAX_NAME_LENGTH else name[: MAX_NAME_LENGTH - 3] + "..."


def resolved_yaml(cfg: CotrainConfig) -> str:
    """The resolved config as YAML (the ``config/resolved.yaml`` artifact)."""
    header = "# the run's config with every preset filled in (runners/presets.py)\n"
    return header + yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)
