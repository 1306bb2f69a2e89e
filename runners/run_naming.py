"""What a co-training run is called and what it records about its settings.

* :func:`run_name`: ``<policy>-<data>-<target>`` plus the fields set on the command line and
  the seed, so runs of a sweep over seeds or budgets are told apart in MLflow's run list;
* :func:`resolved_config`: the config with every preset filled in — the target, the budget,
  the epochs, the learning rate, the augmentation and the policy's own presets (LAS-AT's
  grids, Dynamic's c_max, ...) — as the ``config/resolved.yaml`` artifact;
* :data:`RESUME_KEYS`: the settings a ``resume=<id>`` may give (the rest is the run's own).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

from learned_at.runners.config import config_to_dict, plain

if TYPE_CHECKING:
    from learned_at.runners.config import CotrainConfig, Resolved

__all__ = ["RESUME_KEYS", "resolved_config", "run_name"]

RESUME_KEYS = ("resume", "epochs", "progress", "device", "threads", "checkpoint_dir",
               "checkpoint_every_s",
               "tracking.")
"""Override keys (or key prefixes, ending in ``.``) accepted together with ``resume=<id>``."""
_IN_BASE_NAME = ("policy", "data", "target")
_NOT_IN_NAME = ("seed", "resume", "progress", "device", "checkpoint_dir", "checkpoint_every_s",
                "experiment", "run_name", "data.root", "data.download", "tracking.", "hydra.")
MAX_NAME_LENGTH = 250


def run_name(cfg: CotrainConfig, overrides: list[str], target: str) -> str:
    """``<policy>-<data>-<target> [key=value ...] seed=<n>`` (at most 250 characters): the
    overrides that change the method or its setting, in the order given; bookkeeping keys
    (progress, device, checkpoint_dir, tracking.*, ...) are left out."""
    fields = []
    for token in overrides:
        key, sep, _ = token.partition("=")
        key = key.lstrip("+~")
        if sep and key not in _IN_BASE_NAME and not key.startswith(_NOT_IN_NAME):
            fields.append(token.lstrip("+~"))
    name = " ".join([f"{cfg.policy.name}-{cfg.data.name}-{target}", *fields, f"seed={cfg.seed}"])
    return name if len(name) <= MAX_NAME_LENGTH else name[: MAX_NAME_LENGTH - 3] + "..."


def resolved_config(cfg: CotrainConfig, resolved: Resolved, presets: dict[str, Any]) -> str:
    """The run's config as YAML with the presets filled in (``None`` fields replaced by the
    values the run uses; ``presets``: :meth:`agents.base.Policy.resolved_presets`)."""
    d = config_to_dict(cfg)
    d["target"]["name"] = resolved.target
    d["threat"]["eps"] = resolved.eps
    d["epochs"] = resolved.epochs
    d["optim"]["lr"] = resolved.lr
    d["data"]["augment"] = resolved.augment
    d["policy"].update(plain(presets))
    header = "# the run's config with every preset filled in (runners/run_naming.py)\n"
    return header + yaml.safe_dump(d, sort_keys=False, default_flow_style=None)
