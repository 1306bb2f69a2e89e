"""Presets of LAS-AT's three reference variants (the grids are in agents/strategy/space.py).

Variants (docs/seeds.md §1.5-1.7, LAS-AT@ee756b7):

=========  ========  ===========  ========  =================  ======================
variant    interval  (a, b)       R1 clamp  policy SGD         policy lr decay (×0.1)
=========  ========  ===========  ========  =================  ======================
pgd_at     20        (4, 2)       10        no momentum        none (the reference's
                                                               milestones are never
                                                               reached, §0.4)
trades     1         (8, 4)       20        momentum 0.9,      75 %, 90 % of training
                                            wd 5e-4
awp        1         (1, 1)       10        no momentum        50 %, 75 % of training
=========  ========  ===========  ========  =================  ======================

Digits shortens the update interval to at most 4 and raises the policy lr to 0.05: the whole
digits run has only 330 batches, so the reference's (20, 1e-4) would leave the policy at its
initial uniform distribution.
"""

from __future__ import annotations

from typing import Any

from agents.strategy.space import Variant

VARIANTS: dict[Variant, dict[str, Any]] = {
    Variant.pgd_at: {"interval": 20, "weights": (4.0, 2.0), "r1_clamp": 10.0, "momentum": 0.0,
                     "weight_decay": 0.0, "lr_milestones": ()},
    Variant.trades: {"interval": 1, "weights": (8.0, 4.0), "r1_clamp": 20.0, "momentum": 0.9,
                     "weight_decay": 5e-4, "lr_milestones": (0.75, 0.9)},
    Variant.awp: {"interval": 1, "weights": (1.0, 1.0), "r1_clamp": 10.0, "momentum": 0.0,
                  "weight_decay": 0.0, "lr_milestones": (0.5, 0.75)},
}

#: per-data-set overrides of the variant presets.
DATA_OVERRIDES: dict[str, dict[str, Any]] = {"digits": {"interval": 4, "lr": 0.05}}

DEFAULT_LR = 1e-4


def preset_settings(data: str, variant: Variant) -> dict[str, Any]:
    """Interval, reward weights, R1 clamp, policy optimiser and lr for a data set and variant."""
    settings = dict(VARIANTS[variant], lr=DEFAULT_LR)
    override = DATA_OVERRIDES.get(data, {})
    settings["lr"] = override.get("lr", settings["lr"])
    settings["interval"] = min(settings["interval"], override.get("interval", 10**9))
    return settings
