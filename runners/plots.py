"""Figures for runs (matplotlib, Agg backend: safe on headless machines).

Every function returns a :class:`~matplotlib.figure.Figure`; pass it to
:meth:`runners.tracking.Tracker.log_figure`, which closes it.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from learned_at.runners.formatting import format_grid_value  # noqa: E402

__all__ = ["curves", "distribution_heatmap"]

_MAX_Y_LABELS = 16


def _epoch_edges(epochs: list[int]) -> np.ndarray:
    """Cell boundaries on the epoch axis: midpoints between epochs, half a gap at the ends."""
    x = np.asarray(epochs, dtype=float)
    if len(x) == 1:
        return np.array([x[0] - 0.5, x[0] + 0.5])
    mid = (x[1:] + x[:-1]) / 2
    return np.concatenate([[x[0] - (mid[0] - x[0])], mid, [x[-1] + (x[-1] - mid[-1])]])


def distribution_heatmap(rows: list[dict[str, Any]], title: str) -> Figure:
    """Heat map of a distribution's evolution over epochs (cf. LAS-AT, Fig. 4).

    Args:
        rows: Rows of :meth:`runners.distributions.DistributionHistory.history`: categorical
            rows (``values``, ``fractions``) or histogram rows (``edges``, ``fractions``);
            histogram edges may differ between epochs.
        title: Figure title.

    Returns:
        Figure with epochs on the x axis, grid values (categorical, one row each) or the value
        range (histograms, with the per-epoch mean as a line) on the y axis, and the fraction
        of samples as colour.
    """
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not rows:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return fig
    rows = sorted(rows, key=lambda row: row["epoch"])
    epochs = [int(row["epoch"]) for row in rows]
    x_edges = _epoch_edges(epochs)
    vmax = max(max(row["fractions"], default=0.0) for row in rows) or 1.0
    style: dict[str, Any] = {"cmap": "viridis", "vmin": 0.0, "vmax": vmax, "shading": "flat"}

    if "values" in rows[0]:
        grid = [float(v) for v in rows[0]["values"]]
        order = sorted(range(len(grid)), key=lambda i: grid[i])
        matrix = np.array([[row["fractions"][i] for i in order] for row in rows]).T
        y_edges = np.arange(len(grid) + 1) - 0.5
        mesh = ax.pcolormesh(x_edges, y_edges, matrix, **style)
        ticks = np.arange(len(grid))
        stride = max(1, math.ceil(len(grid) / _MAX_Y_LABELS))
        ax.set_yticks(ticks[::stride], [format_grid_value(grid[i], grid) for i in order][::stride])
        ax.set_ylabel("value")
    else:
        shared = all(row["edges"] == rows[0]["edges"] for row in rows)
        if shared:
            matrix = np.array([row["fractions"] for row in rows]).T
            mesh = ax.pcolormesh(x_edges, np.asarray(rows[0]["edges"]), matrix, **style)
        else:
            for i, row in enumerate(rows):
                column = np.asarray(row["fractions"], dtype=float)[:, None]
                mesh = ax.pcolormesh(x_edges[i : i + 2], np.asarray(row["edges"]), column, **style)
        means = [row.get("mean", math.nan) for row in rows]
        if any(math.isfinite(m) for m in means):
            ax.plot(epochs, means, color="white", linewidth=1.2, marker=".", label="mean")
            ax.legend(loc="upper right", fontsize="small", facecolor="0.25", labelcolor="white")
        ax.set_ylabel("value (bin)")
    ax.set_xlim(x_edges[0], x_edges[-1])
    fig.colorbar(mesh, ax=ax, label="fraction of samples")
    return fig


def curves(series: dict[str, list[tuple[int, float]]], title: str, ylabel: str) -> Figure:
    """Line plot of one or more series over epochs (e.g. clean and robust accuracy).

    Args:
        series: ``{label: [(epoch, value), ...]}``.
        title: Figure title.
        ylabel: Y-axis label.

    Returns:
        The figure (legend shown when there is more than one series).
    """
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for label, points in series.items():
        points = sorted(points)
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        ax.plot(xs, ys, label=label, marker="o" if len(points) <= 30 else None, markersize=3)
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    if len(series) > 1:
        ax.legend()
    return fig
