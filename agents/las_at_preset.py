"""Presets of LAS-AT: the three reference variants and the strategy grids per data set.

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

Grids are multiples of ``unit = ε/8`` (ε = the run's nominal budget), so CIFAR at 8/255 gives
exactly the README's ``k/255`` grids (§1.1): PGD-AT ε {3..15}, α {1..5}, K {3..14};
TRADES ε {5..9}, α {2..4}, K {7..14}, β {5..9}; AWP ε {7..15}, α {2..5}, K {8..16}.

MNIST (ε = 0.3) and digits (ε = 0.2): ε ∈ unit·{4..12} (half to 1.5 times the nominal budget;
the CIFAR grid's upper end, 15/8 ε ≈ 0.56 on MNIST, erases digits), α ∈ unit·{1..5} (the same
ratios as CIFAR), K ∈ {3..14} on MNIST (the reference K grid) and {2..8} on digits (cost: the
embedded default must train in about a minute on two CPU cores). TRADES adds β ∈ {5..9}.
Digits also shortens the update interval to at most 4 and raises the policy lr to 0.05: the whole
digits run has only 330 batches, so the reference's (20, 1e-4) would leave the policy at its
initial uniform distribution.
"""

from __future__ import annotations

from typing import Any

VARIANTS: dict[str, dict[str, Any]] = {
    "pgd_at": {"interval": 20, "weights": (4.0, 2.0), "r1_clamp": 10.0, "momentum": 0.0,
               "weight_decay": 0.0, "lr_milestones": ()},
    "trades": {"interval": 1, "weights": (8.0, 4.0), "r1_clamp": 20.0, "momentum": 0.9,
               "weight_decay": 5e-4, "lr_milestones": (0.75, 0.9)},
    "awp": {"interval": 1, "weights": (1.0, 1.0), "r1_clamp": 10.0, "momentum": 0.0,
            "weight_decay": 0.0, "lr_milestones": (0.5, 0.75)},
}

#: grids in units of ε/8 (eps, alpha) and absolute (steps, beta), per (data family, variant).
_CIFAR = {
    "pgd_at": {"eps": range(3, 16), "alpha": range(1, 6), "steps": range(3, 15)},
    "trades": {"eps": range(5, 10), "alpha": range(2, 5), "steps": range(7, 15),
               "beta": range(5, 10)},
    "awp": {"eps": range(7, 16), "alpha": range(2, 6), "steps": range(8, 17)},
}
_SMALL = {"eps": range(4, 13), "alpha": range(1, 6), "beta": range(5, 10)}
_STEPS = {"mnist": range(3, 15), "digits": range(2, 9)}

#: per-data-set overrides of the variant presets.
DATA_OVERRIDES: dict[str, dict[str, Any]] = {"digits": {"interval": 4, "lr": 0.05}}

DEFAULT_LR = 1e-4


def resolve_variant(variant: str, at_loss_name: str) -> str:
    """``auto`` -> the variant matching the run's AT loss (trades, awp, else pgd_at)."""
    if variant == "auto":
        return at_loss_name if at_loss_name in ("trades", "awp") else "pgd_at"
    if variant not in VARIANTS:
        raise ValueError(f"unknown LAS-AT variant {variant!r}; valid: auto, "
                         f"{', '.join(VARIANTS)}")
    return variant


def preset_grids(data: str, variant: str, eps: float) -> dict[str, tuple[float, ...]]:
    """Default grids (absolute values) for a data set, a variant and the nominal ε.

    Returns ``{"eps", "alpha", "steps"[, "beta"]}``; β only for the TRADES variant.
    """
    unit = eps / 8.0
    if data in _STEPS:
        table = dict(_SMALL, steps=_STEPS[data])
    else:
        table = _CIFAR[variant]
    grids = {"eps": tuple(unit * k for k in table["eps"]),
             "alpha": tuple(unit * k for k in table["alpha"]),
             "steps": tuple(float(k) for k in table["steps"])}
    if variant == "trades":
        grids["beta"] = tuple(float(b) for b in table.get("beta", range(5, 10)))
    return grids


def preset_settings(data: str, variant: str) -> dict[str, Any]:
    """Interval, reward weights, R1 clamp, policy optimiser and lr for a data set and variant."""
    settings = dict(VARIANTS[variant], lr=DEFAULT_LR)
    override = DATA_OVERRIDES.get(data, {})
    settings["lr"] = override.get("lr", settings["lr"])
    settings["interval"] = min(settings["interval"], override.get("interval", 10**9))
    return settings
