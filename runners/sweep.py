"""The combinations of a ``-m`` sweep, expanded before any run starts.

``python -m runners.cotrain -m policy=pgd_at,fgsm_rs seed=0,1`` is four runs. The CLI expands
the sweep with Hydra's own parser and basic sweeper (``a=1,2``, ``range(0,3)``,
``choice(...)``, ``glob(...)``) and composes every combination first, so a bad value in any
of them is one line before the first run trains, not a traceback in the middle of the sweep.
"""

from __future__ import annotations

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from learned_at.runners.cli_args import UsageError

__all__ = ["sweep_combinations"]


def sweep_combinations(overrides: list[str]) -> list[list[str]]:
    """Every combination of a sweep's overrides, in Hydra's order (one override list each).

    Raises:
        UsageError: the overrides do not parse, or use a sweep the basic sweeper lacks.
    """
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    except Exception as error:  # Hydra's parse errors are multi-line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"cannot read the sweep {' '.join(overrides)!r}: {first}") from None
    return [list(combo) for batch in batches for combo in batch]
