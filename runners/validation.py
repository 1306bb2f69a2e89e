"""Checks of a composed run config, before any work: ranges, options, budgets, subsets.

Each config class declares the accepted range of its numeric fields in a ``limits`` class
attribute (:class:`envs.options.Limit`); floats without one must at least be finite. The
threat's fields are checked by its geometry (:meth:`envs.geometry.base.Geometry.check_config`:
the budget's range is the geometry's business, e.g. [0, 1] for L∞), which also names legal but
suspicious budgets (:meth:`~envs.geometry.base.Geometry.budget_warning`). A few checks span
fields (a training subset smaller than one batch). Every message names the field, the value
set and the accepted range.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from learned_at.envs.geometry.base import make_geometry
from learned_at.envs.options import check_limits

__all__ = ["check_device_name", "config_problems", "validate_config"]

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
#: components whose fields the geometry checks instead of the generic walk
_GEOMETRY_GROUP = "threat"


def check_device_name(name: str) -> str | None:
    """A problem with a ``device=`` value's spelling, or None (availability is checked when the
    run starts, by runners/device.py)."""
    if _DEVICE.match(name):
        return None
    return f"device={name!r} is not a device: accepted auto, cpu, cuda, cuda:<n>"


def config_problems(config: Any, prefix: str) -> list[str]:
    """Out-of-range fields of one config dataclass and of the dataclasses nested in it.

    Fields with a declared :class:`~envs.options.Limit` are checked against it; other float
    fields must be finite (NaN and ±inf are never a setting).
    """
    limits = getattr(type(config), "limits", {})
    problems = check_limits(config, prefix, limits)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(value):
            if key != _GEOMETRY_GROUP:
                problems += config_problems(value, key)
        elif f.name not in limits and isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{key}={value} is not a finite number")
    return problems


def validate_config(cfg: Any, image_shape: tuple[int, int, int]
                    ) -> tuple[list[str], list[str]]:
    """Every problem and every warning of a run config.

    Args:
        cfg: the composed config (:class:`runners.config.CotrainConfig`).
        image_shape: (C, H, W) of the run's data set (the budget's range may depend on it).

    Returns:
        (problems, warnings): one line each; a run starts only without problems.
    """
    problems = config_problems(cfg, "")
    geometry = make_geometry(cfg.threat)
    problems += geometry.check_config(image_shape)
    device = check_device_name(cfg.device)
    if device:
        problems.append(device)
    subset = cfg.data.train_subset
    if 0 < subset < cfg.batch_size:
        problems.append(f"data.train_subset={subset} is smaller than batch_size={cfg.batch_size}:"
                        " not one full training batch (accepted 0 = all, or >= batch_size)")
    if cfg.data.augment and cfg.data.name == "digits":
        problems.append("data.augment=true on digits (8x8) crops with 4 pixels of padding — half "
                        "the image, about 40 % of a digit's ink lost on average — and flips "
                        "digits left-right (a flipped 2 is not a 2): accepted data.augment=false "
                        "or null for digits")
    warnings = []
    if cfg.data.augment and cfg.data.name == "mnist":
        warnings.append("data.augment=true flips MNIST digits left-right (a flipped 2 is not a "
                        "2) besides the 4-pixel crop; the presets train MNIST without it")
    if cfg.threat.eps is not None and not problems:
        warning = geometry.budget_warning(float(cfg.threat.eps), image_shape)
        if warning:
            warnings.append(warning)
    return problems, warnings
