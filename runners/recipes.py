"""Recipes: named override lists that reproduce a paper's setting (``recipe=<name>``).

A recipe is applied first, so every override the user gives after it wins::

    python -m runners.cotrain recipe=<name> [more overrides]

Each recipe names its source (paper, reference code) and is one entry of :data:`RECIPES`;
``python -m runners.cotrain recipe=list`` prints them. A recipe for a GPU setting is still an
ordinary run: the same config, the same tracking.
"""

from __future__ import annotations

from dataclasses import dataclass

from learned_at.runners.paper_recipes import PAPER_RECIPES


@dataclass(frozen=True)
class Recipe:
    """A named setting.

    Attributes:
        overrides: Hydra overrides (``group=option``, ``group.field=value``).
        doc: one line: what it reproduces and where the numbers come from.
    """

    overrides: tuple[str, ...]
    doc: str


RECIPES: dict[str, Recipe] = {}


def register_recipe(name: str, overrides: list[str] | tuple[str, ...], doc: str) -> None:
    """Add a recipe (names are unique)."""
    if name in RECIPES:
        raise ValueError(f"recipe {name!r} registered twice")
    RECIPES[name] = Recipe(tuple(overrides), doc)


for _name, (_overrides, _doc) in PAPER_RECIPES.items():
    register_recipe(_name, _overrides, _doc)


def expand_recipes(overrides: list[str]) -> list[str]:
    """Replace ``recipe=<name>`` by the recipe's overrides, in place of the token (so later
    overrides win). Unknown names list the valid ones."""
    out: list[str] = []
    for token in overrides:
        key, sep, value = token.partition("=")
        if sep and key == "recipe":
            if value not in RECIPES:
                raise ValueError(f"unknown recipe {value!r}; valid: {', '.join(sorted(RECIPES))}")
            out.extend(RECIPES[value].overrides)
        else:
            out.append(token)
    return out


def format_recipes() -> str:
    """One line per recipe: name, doc, overrides."""
    if not RECIPES:
        return "no recipes registered"
    return "\n".join(f"{name}: {r.doc}\n    {' '.join(r.overrides)}"
                     for name, r in sorted(RECIPES.items()))


# -- Fast-BAT (Zhang et al., ICML 2022; reference OPTML-Group/Fast-BAT train.py, docs/seeds.md §5)
_FAST_BAT_CIFAR10 = (
    "data=cifar10", "target=preact_resnet18", "policy=fgsm_rs", "at_loss=fast_bat",
    "epochs=20", "batch_size=128", "optim.lr=0.2", "optim.schedule=cyclic",
    "optim.cyclic_peak=0.5", "optim.momentum=0.9", "optim.weight_decay=0.0005",
    "data.val_size=5000", "eval.final_pgd_steps=50", "eval.final_restarts=10",
    "monitor.keep_best=true")
register_recipe(
    "fast_bat_cifar10", (*_FAST_BAT_CIFAR10, "threat.eps=0.03137254901960784"),
    "Fast-BAT, CIFAR-10, eps 8/255: PreActResNet-18, 20 epochs, cyclic lr 0 -> 0.2 -> 0, "
    "45k/5k train/val split, final PGD-50-10 (paper: 79.97 clean / 48.83 PGD / 45.19 AA); "
    "at_loss=ce after it gives the paper's Fast-AT baseline")
register_recipe(
    "fast_bat_cifar10_eps16", (*_FAST_BAT_CIFAR10, "threat.eps=0.06274509803921569"),
    "Fast-BAT, CIFAR-10, eps 16/255 (raw step 2000/255), otherwise as fast_bat_cifar10 "
    "(paper: 68.16 clean / 27.69 PGD / 18.79 AA; Fast-AT overfits catastrophically)")
