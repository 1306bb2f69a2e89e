"""``python -m runners.cotrain --help`` and ``--cfg job``: the config as a user sees it.

The help lists the config groups with their options, every field of the composed config with
its current value (defaults, or what the other arguments set: ``policy=ppo_strategy --help``
shows PPO's fields) and its description (from the config dataclasses' docstrings), the flags
and one example. ``--cfg job`` prints the composed config as YAML, as Hydra's flag does (one
document per combination under ``-m``) and exits without training.
"""

from __future__ import annotations

import dataclasses
import textwrap
import yaml

from learned_at.runners.cli_args import UsageError, format_fields
from learned_at.runners.config import (GROUP_NAMES, CotrainConfig, DATA_PRESETS, compose_config,
                                       config_to_dict, group_options)

__all__ = ["cotrain_help", "pop_cfg_flag", "print_configs", "reject_unknown_flags"]

USAGE = ("python -m runners.cotrain [group=option ...] [key=value ...] [-m] [--cfg job] [--help]"
         "\n       (console script: lat-cotrain)")
SUMMARY = ("Co-train a target network and an attack policy (one MLflow run; the last line "
           "printed is run_id=<id>). A field left null takes the data set's preset "
           f"({', '.join(DATA_PRESETS)}).")
EXAMPLE = "python -m runners.cotrain policy=pgd_at threat.eps=0.1 epochs=10 seed=1"
FLAGS = [
    "  -m, --multirun                 a sweep: key=a,b (or range(), choice()) runs every",
    "                                 combination; all are checked before the first run",
    "  --cfg job                      print the composed config as YAML and exit (one per",
    "                                 combination with -m)",
    "  --help, -h                     this text; with group=option, that option's fields",
    "  recipe=<name>                  a named setting applied first (recipe=list prints them)",
    "  resume=<run id> [epochs=N]     continue a run from its last checkpoint (or re-plan it",
    "                                 to N epochs); see README 'Preemption and resume'",
]
_CFG_VALUES = ("job", "all")


def cotrain_help(overrides: list[str]) -> str:
    """The ``--help`` text for the config composed from ``overrides``."""
    cfg = compose_config(overrides)
    options = group_options()
    lines = [f"usage: {USAGE}", "", textwrap.fill(SUMMARY, 100), "",
             "config groups (group=option; * = selected):"]
    for group in GROUP_NAMES:
        chosen = getattr(cfg, group).name
        names = ", ".join(f"*{o}" if o == chosen else o for o in options[group])
        lines.append(textwrap.fill(f"  {group:<10}{names}", 100, subsequent_indent=" " * 12))
    lines += ["", "fields (key=value: the current value, then what it is):", "  run:"]
    lines += format_fields(cfg, indent=4)
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            chosen = f" ({f.name}={value.name})" if f.name in GROUP_NAMES else ""
            fields = format_fields(value, f.name, skip=("name",), indent=4)
            lines += [f"  {f.name}{chosen}:", *fields] if fields else []
    lines += ["", "flags:", *FLAGS, "", "example:", f"  {EXAMPLE}"]
    return "\n".join(lines)


def pop_cfg_flag(argv: list[str]) -> tuple[list[str], str | None]:
    """Remove ``--cfg job`` (``--cfg=job``, ``-c job``; ``all`` is the same here) and
    ``--resolve`` from ``argv``; return the rest and the flag's value (None if absent)."""
    rest: list[str] = []
    value: str | None = None
    i = 0
    while i < len(argv):
        token = argv[i]
        if token in ("--cfg", "-c"):
            if i + 1 >= len(argv):
                raise UsageError("--cfg needs a value: --cfg job")
            value, i = argv[i + 1], i + 2
        elif token.startswith("--cfg="):
            value, i = token.split("=", 1)[1], i + 1
        elif token == "--resolve":
            i += 1  # no interpolations in these configs: nothing to resolve
        else:
            rest.append(token)
            i += 1
    if value is not None and value not in _CFG_VALUES:
        raise UsageError(f"--cfg {value}: unsupported; valid: --cfg job (the run's config)")
    return rest, value


def reject_unknown_flags(argv: list[str]) -> None:
    """Refuse options this CLI does not have (Hydra's ``--info``, ``--config-dir``, ...)."""
    flags = [a for a in argv if a.startswith("-")]
    if flags:
        raise UsageError(f"unknown option {flags[0]!r}; valid: --help, -m/--multirun, "
                         "--cfg job (fields are key=value; see --help)")


def _yaml(cfg: CotrainConfig) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)


def print_configs(configs: list[tuple[list[str], CotrainConfig]]) -> None:
    """Print each composed config as a YAML document (a header per combination if several)."""
    for i, (overrides, cfg) in enumerate(configs):
        if len(configs) > 1:
            print(f"--- # combination {i}: {' '.join(overrides)}")
        print(_yaml(cfg), end="")

