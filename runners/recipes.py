"""Recipes: named settings that reproduce a paper (``recipe=<name>``), as a Hydra config group.

A recipe is an override list (:mod:`runners.paper_recipes` holds the papers'); each becomes an
option of the ``recipe`` config group whose defaults list picks the recipe's group options
(``override /data: cifar10``) and whose body sets its fields. The group comes last in the
run's defaults list, and Hydra applies command-line overrides after every defaults list, so
any override given with a recipe wins::

    python -m runners.cotrain recipe=fast_bat_cifar10 data.root=../shared/data epochs=5

``python -m runners.cotrain --help`` lists the recipes with their one-line descriptions.
A user's own recipe is one :func:`register_recipe` call, made before the config is composed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser

from learned_at.runners.paper_recipes import PAPER_RECIPES

__all__ = ["RECIPES", "Recipe", "recipe_node", "register_recipe", "unregister_recipe"]


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


def register_recipe(name: str, overrides: Sequence[str], doc: str) -> None:
    """Add a recipe (names are unique)."""
    if name in RECIPES:
        raise ValueError(f"recipe {name!r} registered twice")
    RECIPES[name] = Recipe(tuple(overrides), doc)


def unregister_recipe(name: str) -> None:
    """Remove a recipe (tests that register a throw-away one clean up with it)."""
    RECIPES.pop(name, None)


def recipe_node(recipe: Recipe, groups: Sequence[str]) -> dict[str, Any]:
    """The recipe as a config-group option (package ``_global_``): group choices go into its
    defaults list as overrides, field values into its body."""
    defaults: list[Any] = []
    body: dict[str, Any] = {}
    for override in OverridesParser.create().parse_overrides(list(recipe.overrides)):
        key, value = override.get_key_element(), override.value()
        if key in groups:
            defaults.append({f"override /{key}": value})
            continue
        *parents, leaf = key.split(".")
        node = body
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return {"defaults": [*defaults, "_self_"], **body}


for _name, (_overrides, _doc) in PAPER_RECIPES.items():
    register_recipe(_name, _overrides, _doc)
