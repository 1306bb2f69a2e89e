"""Short, readable labels for numbers shown in tables and plots (no dependencies)."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["format_grid_value"]


def _on_255_lattice(value: float) -> bool:
    k = value * 255
    return abs(k - round(k)) < 1e-6 * max(1.0, abs(k)) and abs(k) < 255 * 16


def _short_decimal(value: float) -> bool:
    """Within float32 rounding of a decimal with at most 3 significant digits (0.2, 0.05)."""
    return abs(float(f"{value:.3g}") - value) <= 1e-6 * max(1.0, abs(value))


def format_grid_value(value: float, grid: Sequence[float] | None = None) -> str:
    """Short, readable label for a grid value or bin centre.

    Integers print as integers; multiples of 1/255 (image budgets) as ``k/255`` when every value
    of ``grid`` (if given) is such a multiple and not all of them are short decimals (0.2 stays
    0.2, 8/255 is 8/255), so one table never mixes the two styles; anything else with 3
    significant digits.
    """
    if not math.isfinite(value):
        return str(value)
    if value == round(value) and abs(value) < 1e6:
        return str(int(round(value)))
    values = [value] if grid is None else [float(v) for v in grid]
    lattice = all(_on_255_lattice(v) for v in values) and not all(map(_short_decimal, values))
    if lattice and _on_255_lattice(value):
        return f"{int(round(value * 255))}/255"
    return f"{value:.3g}"
