"""Recipes: named override lists that reproduce a paper's setting (``recipe=<name>``).

A recipe is applied first, so every override the user gives after it wins::

    python -m runners.cotrain recipe=<name> [more overrides]

Each recipe names its source (paper, reference code) and is one entry of :data:`RECIPES`;
``python -m runners.cotrain recipe=list`` prints them. A recipe for a GPU setting is still an
ordinary run: the same config, the same tracking.
"""

from __future__ import annotations

from dataclasses import dataclass

from runners.paper_recipes import PAPER_RECIPES


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
