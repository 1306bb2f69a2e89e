"""The co-training config in Hydra's ConfigStore: the primary config and every group's options.

:func:`register_configs` stores (again, so that components and recipes registered later are
included):

* the primary config ``cotrain``: the :class:`~runners.config.CotrainConfig` schema, plus
  the Hydra settings of the project's commands (no output folder and no working-directory
  change for a single run, the project's help text, its sweep callback, quiet job logging);
* the ``data``, ``target``, ``at_loss``, ``threat`` and ``policy`` options from the data
  presets, the model registry and the component registries; a policy's option selects its
  :attr:`~agents.base.PolicyConfig.default_at_loss` through its defaults list;
* the ``recipe`` options (:mod:`runners.recipes`).
"""

from __future__ import annotations

from typing import Any

from hydra.core.config_store import ConfigStore

from learned_at.agents.base import policy_registry
from learned_at.envs.geometry.base import geometry_registry
from learned_at.runners.config import GROUP_NAMES, CotrainConfig, DataConfig, TargetConfig
from learned_at.runners.config import structured_node
from learned_at.runners.presets import DATA_PRESETS
from learned_at.runners.recipes import RECIPES, recipe_node
from learned_at.targets.losses.base import at_loss_registry

__all__ = ["CONFIG_NAME", "group_options", "hydra_settings", "register_command",
           "register_configs"]

CONFIG_NAME = "cotrain"

#: Hydra's own lines ("Launching 4 jobs locally", "#0 : policy=pgd_at seed=0") on stdout, so
#: each job's run_id= line follows the combination it ran; the project's logging is untouched.
HYDRA_LOGGING = {
    "version": 1,
    "formatters": {"simple": {"format": "[%(asctime)s][HYDRA] %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "simple",
                             "stream": "ext://sys.stdout"}},
    "loggers": {"hydra": {"level": "INFO", "handlers": ["console"], "propagate": False},
                # "Error executing job ...": the command reports the error in one line itself
                "hydra.core.utils": {"level": "CRITICAL"}},
    "root": {"level": "WARNING"},
    "disable_existing_loggers": False,
}


def hydra_settings(command: str) -> dict[str, Any]:
    """The primary config's additions for one of the project's commands: its Hydra overrides
    (defaults-list entries) and Hydra settings (the ``hydra`` node)."""
    return {
        "defaults": [{"override hydra/job_logging": "none"},
                     {"override hydra/hydra_logging": "learned_at"}, "_self_"],
        "hydra": {"run": {"dir": "."}, "output_subdir": None, "job": {"chdir": False},
                  "sweep": {"dir": "multirun"},
                  "callbacks": {"sweep": {"_target_": "learned_at.runners.sweeper.SweepCallback",
                                          "command": f"runners.{command}"}},
                  "help": {"app_name": command, "template": f"${{lat_help:{command}}}"}},
    }


def register_configs() -> None:
    """Store the primary config and every group option (see the module docstring)."""
    from learned_at.runners.help import register_help_resolver
    from learned_at.targets.models import MODELS

    register_help_resolver(_help_groups)
    cs = ConfigStore.instance()
    cs.store(group="hydra/hydra_logging", name="learned_at", node=HYDRA_LOGGING)
    cs.store(name=f"{CONFIG_NAME}_schema", node=structured_node(CotrainConfig))
    settings = hydra_settings(CONFIG_NAME)
    cs.store(name=CONFIG_NAME, node={**settings, "defaults": [f"{CONFIG_NAME}_schema",
                                                                *settings["defaults"]]})
    for name in DATA_PRESETS:
        cs.store(group="data", name=name, node=structured_node(DataConfig(name=name)))
    for name in ["auto", *MODELS]:
        cs.store(group="target", name=name, node=structured_node(TargetConfig(name=name)))
    for name, (cfg_cls, _) in at_loss_registry().items():
        cs.store(group="at_loss", name=name, node=structured_node(cfg_cls()))
    for name, (cfg_cls, _) in geometry_registry().items():
        cs.store(group="threat", name=name, node=structured_node(cfg_cls()))
    for name, (cfg_cls, _) in policy_registry().items():
        cs.store(group="policy_schema", name=name, node=structured_node(cfg_cls()))
        defaults: list[Any] = [{"/policy_schema@_here_": name}]
        if cfg_cls.default_at_loss:  # the method's own loss; at_loss= on the command line wins
            defaults.append({"override /at_loss@_global_.at_loss": cfg_cls.default_at_loss})
        cs.store(group="policy", name=name, node={"defaults": [*defaults, "_self_"]})
    for name, recipe in RECIPES.items():
        cs.store(group="recipe", name=name, package="_global_",
                 node=recipe_node(recipe, GROUP_NAMES))


def register_command(command: str, args_cls: type) -> None:
    """Store the primary config of a command without config groups (evaluate, inspect,
    compare): its arguments dataclass, with the commands' Hydra settings."""
    from learned_at.runners.help import register_help_resolver

    register_help_resolver(_help_groups)
    cs = ConfigStore.instance()
    cs.store(group="hydra/hydra_logging", name="learned_at", node=HYDRA_LOGGING)
    cs.store(name=f"{command}_schema", node=structured_node(args_cls))
    settings = hydra_settings(command)
    cs.store(name=command, node={**settings, "defaults": [f"{command}_schema",
                                                          *settings["defaults"]]})


def group_options() -> dict[str, list[str]]:
    """Valid options per config group (``recipe`` included)."""
    from learned_at.targets.models import MODELS

    return {
        "data": list(DATA_PRESETS), "target": ["auto", *MODELS],
        "at_loss": sorted(at_loss_registry()), "threat": sorted(geometry_registry()),
        "policy": sorted(policy_registry()), "recipe": sorted(RECIPES),
    }


def _help_groups() -> tuple[dict[str, list[str]], dict[str, str]]:
    """What ``--help`` lists: each group's options, and each recipe's line."""
    return group_options(), {name: recipe.doc for name, recipe in sorted(RECIPES.items())}
