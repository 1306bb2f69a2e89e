"""``--help`` of every command: Hydra's help, with the project's template.

Each command's primary config sets ``hydra.help.template`` to ``${lat_help:<command>}``; the
``lat_help`` resolver (:func:`register_help_resolver`) renders the text from the config Hydra
composed for ``--help`` (so ``policy=ppo_strategy --help`` shows PPO's fields): the usage, what
the command does, its config groups with their options (and the recipes, each with its line),
every field with its current value and its meaning (the ``doc`` metadata of the config
dataclasses' fields, :func:`envs.options.setting`), Hydra's flags and one example.
"""

from __future__ import annotations

import dataclasses
import textwrap
from dataclasses import dataclass
from enum import Enum
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from learned_at.envs.options import DOC

__all__ = ["COMMANDS", "CommandHelp", "format_value", "help_text", "register_help_resolver"]

WIDTH = 100


@dataclass(frozen=True)
class CommandHelp:
    """What ``--help`` says about one command besides its fields.

    Attributes:
        usage: the usage line(s).
        summary: what the command does (wrapped).
        example: one command line.
        groups: the command has config groups (co-training).
    """

    usage: str
    summary: str
    example: str
    groups: bool = False


FLAGS = [
    "  -m, --multirun         a sweep: key=a,b (or range(), choice()) runs every combination;",
    "                         all are checked before the first one runs (runners/sweeper.py)",
    "  --cfg job              print the composed config as YAML and exit (not with -m)",
    "  --help, -h             this text; with group=option, that option's fields",
    "  --hydra-help, --info   Hydra's own help and information",
]

COMMANDS: dict[str, CommandHelp] = {
    "cotrain": CommandHelp(
        "python -m runners.cotrain [group=option ...] [key=value ...] [-m] [--cfg job]"
        "\n       (console script: lat-cotrain)",
        "Co-train a target network and an attack policy (one MLflow run; the last line "
        "printed is run_id=<id>). A field left null takes its preset (the data set's, the "
        "geometry's or the policy's); resume=<run id> continues a run from its last "
        "checkpoint (epochs=N re-plans it).",
        "python -m runners.cotrain policy=pgd_at threat.eps=0.1 epochs=10 seed=1", groups=True),
    "evaluate": CommandHelp(
        "python -m runners.evaluate run_id=<id> [key=value ...]   (console script: lat-evaluate)",
        "Evaluate a co-training run's final target with strong attacks (PGD with restarts, CW, "
        "the original AutoAttack, transfer; L0: sPGD, Sparse-RS, Sparse-AutoAttack) and "
        "optional gradient-masking checks; the results go to a new MLflow run nested under the "
        "training run (kind=evaluation).",
        "python -m runners.evaluate run_id=3f2a... attacks=[clean,pgd50x10,autoattack] "
        "n_examples=1000 checks=true"),
    "inspect": CommandHelp(
        "python -m runners.inspect run_id=<id> [key=<name>]   (console script: lat-inspect)",
        "Print a co-training run's per-epoch distributions of the policy's per-sample choices "
        "(budget, step size, iterations, ...), read from the run's distributions/*.json "
        "tables.", "python -m runners.inspect run_id=3f2a... key=eps"),
    "compare": CommandHelp(
        "python -m runners.compare run_ids=[a,b] | experiment=<name> | filter=<mlflow filter> "
        "[key=value ...]   (console script: lat-compare)",
        "Print a markdown table comparing finished runs: method, clean / PGD / AutoAttack / "
        "worst-case accuracy (the latest runners.evaluate results), gradient-masking checks "
        "and training time; seeds aggregated, two groups paired.",
        "python -m runners.compare experiment=learned-at group_by=[policy.name] "
        "paired=[las_at,pgd_at]"),
}


def format_value(value: Any) -> str:
    """A value as it is written on the command line (``null``, ``true``, ``[a,b]``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _fields(node: DictConfig, prefix: str, skip: tuple[str, ...] = (), indent: int = 4
            ) -> list[str]:
    """``key=value`` and its meaning for each leaf field of a structured node."""
    cls = OmegaConf.get_type(node)
    docs = {f.name: str(f.metadata.get(DOC, "")) for f in dataclasses.fields(cls)} \
        if dataclasses.is_dataclass(cls) else {}
    column, out = indent + 32, []
    for key in node.keys():
        value = node[key]
        if key in ("defaults", "name", *skip) or isinstance(value, DictConfig):
            continue
        raw = OmegaConf.to_container(value) if OmegaConf.is_list(value) else value
        head = f"{' ' * indent}{prefix}{key!s}={format_value(raw)}"
        text = docs.get(str(key), "")
        if len(head) >= column:
            out.append(head)
            head = ""
        out.append(textwrap.fill(head.ljust(column) + text, WIDTH,
                                 subsequent_indent=" " * column))
    return [line for line in out if line.strip()]


def help_text(command: str, cfg: DictConfig) -> str:
    """The ``--help`` text of ``command`` for the composed config ``cfg`` (the ``hydra`` node
    is ignored)."""
    spec = COMMANDS[command]
    lines = [f"usage: {spec.usage}", "", textwrap.fill(spec.summary, WIDTH), ""]
    nested = [str(k) for k in cfg.keys() if k != "hydra" and isinstance(cfg[k], DictConfig)]
    if spec.groups:
        lines += _group_lines(cfg)
    if spec.groups:
        lines += ["fields (key=value: the current value, then what it is):", "  run:",
                  *_fields(cfg, "", skip=("hydra",))]
    else:
        lines += ["arguments (key=value: the current value, then what it is):",
                  *_fields(cfg, "", skip=("hydra",), indent=2)]
    for key in nested:
        node = cfg[key]
        chosen = f" ({key}={node.name})" if "name" in node else ""
        fields = _fields(node, f"{key}.")
        lines += [f"  {key}{chosen}:", *fields] if fields else []
        for sub in [k for k in node.keys() if isinstance(node[k], DictConfig)]:
            lines += _fields(node[sub], f"{key}.{sub}.")
    lines += ["", "flags:", *FLAGS, "", "example:", f"  {spec.example}"]
    return "\n".join(lines)


def _group_lines(cfg: DictConfig) -> list[str]:
    options, recipes = _GROUPS[0]()
    lines = ["config groups (group=option; * = selected):"]
    for group in [g for g in options if g != "recipe"]:
        chosen = cfg[group].name
        names = ", ".join(f"*{o}" if o == chosen else o for o in options[group])
        lines.append(textwrap.fill(f"  {group:<10}{names}", WIDTH, subsequent_indent=" " * 12))
    lines += ["  recipe    a paper's setting, applied after the groups (overrides win):"]
    for name, doc in recipes.items():
        lines.append(textwrap.fill(f"    {name}: {doc}", WIDTH, subsequent_indent=" " * 6))
    return [*lines, ""]


def _render(command: str, *, _root_: DictConfig) -> str:
    # Hydra substitutes $VARIABLES in the template: a literal $ is written $$
    return help_text(command, _root_).replace("$", "$$")


#: what the groups section lists: () -> (group -> options, recipe -> its line)
_GROUPS: list[Callable[[], tuple[dict[str, list[str]], dict[str, str]]]] = []


def register_help_resolver(groups: Callable[[], tuple[dict[str, list[str]], dict[str, str]]]
                           ) -> None:
    """Register the ``lat_help`` resolver (idempotent); ``groups`` gives the co-training's
    config groups with their options and the recipes with their lines."""
    _GROUPS[:] = [groups]
    if not OmegaConf.has_resolver("lat_help"):
        OmegaConf.register_new_resolver("lat_help", _render)
