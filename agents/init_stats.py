"""Per-sample statistics of an attack's initial perturbation, shared by initialisation policies.

The runner turns every key into per-epoch distributions: ``policy/init_norm_{mean,p10,p50,p90}``,
a per-epoch histogram table ``distributions/init_norm.json`` and a heat map of its evolution
``plots/init_norm_heatmap.png`` (likewise for ``init_abs_mean``).
"""

from __future__ import annotations

import torch

from learned_at.envs.geometry.base import Geometry
from learned_at.envs.result import AttackResult


def describe_init(result: AttackResult, geometry: Geometry) -> dict[str, torch.Tensor]:
    """Budget, iterations used and the size of the initial perturbation δ₀, per sample.

    Returns:
        ``eps``, ``steps``, ``init_norm`` (size of δ₀ in the geometry; for L∞ mostly ≈ ε, so
        also) ``init_abs_mean`` (mean |δ₀| over pixels, how much of the ball the start fills);
        each (N,) float.
    """
    d0 = result.delta0
    return {"eps": result.eps, "steps": result.steps.to(result.eps.dtype),
            "init_norm": geometry.size(d0), "init_abs_mean": d0.abs().flatten(1).mean(1)}
