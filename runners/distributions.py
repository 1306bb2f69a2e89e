"""Per-epoch distributions of per-sample policy choices (e.g. the eps a strategy head picks).

:class:`DistributionHistory` collects per-sample values during an epoch without touching the
host, and turns them at the end of the epoch into one table row per key (one device-to-host
transfer per key):

* categorical keys (:meth:`DistributionHistory.declare`): the fraction of samples at each value
  of a fixed grid (values off the grid count for the nearest grid value);
* histogram keys: the fraction of samples in each bin, over fixed edges
  (:meth:`DistributionHistory.declare_hist`; values outside are counted in the first/last bin)
  or, for undeclared keys, ``default_bins`` equal bins between the epoch's min and max.

Every row also holds ``mean``, ``p10``, ``p50``, ``p90`` and ``n`` (number of finite values;
NaN and ±inf are left out of every statistic). :func:`log_distributions` writes the table and
a heat map to a :class:`~runners.tracking.Tracker`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from runners import plots

if TYPE_CHECKING:
    from runners.tracking import Tracker

__all__ = ["DistributionHistory", "log_distributions"]

_QUANTILES = (0.1, 0.5, 0.9)


class DistributionHistory:
    """Accumulates per-epoch distributions of per-sample values, per key.

    Args:
        default_bins: Number of bins of undeclared keys (between the epoch's min and max).
    """

    def __init__(self, default_bins: int = 20) -> None:
        if default_bins < 1:
            raise ValueError(f"default_bins must be positive, got {default_bins}")
        self.default_bins = default_bins
        self._specs: dict[str, dict[str, Any]] = {}
        self._rows: dict[str, list[dict[str, Any]]] = {}
        self._pending: dict[str, list[torch.Tensor]] = {}

    # ------------------------------------------------------------------------------ declaring

    def declare(self, key: str, grid: Sequence[float]) -> None:
        """Marks ``key`` as categorical over a fixed grid of values.

        Raises:
            ValueError: Empty or non-finite grid, or ``key`` was declared differently before.
        """
        values = [float(v) for v in grid]
        if not values or not all(math.isfinite(v) for v in values):
            raise ValueError(f"{key!r}: the grid must be non-empty and finite, got {list(grid)}")
        self._set_spec(key, {"kind": "categorical", "grid": values})

    def declare_hist(self, key: str, edges: Sequence[float]) -> None:
        """Gives ``key`` a histogram over fixed bin edges (strictly increasing, at least 2).

        Raises:
            ValueError: Invalid edges, or ``key`` was declared differently before.
        """
        values = [float(v) for v in edges]
        if len(values) < 2 or any(b <= a for a, b in zip(values, values[1:])):
            raise ValueError(f"{key!r}: edges must be strictly increasing (>= 2), got {values}")
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"{key!r}: edges must be finite, got {values}")
        self._set_spec(key, {"kind": "histogram", "edges": values})

    def _set_spec(self, key: str, spec: dict[str, Any]) -> None:
        old = self._specs.get(key)
        if old is not None and old != spec:
            raise ValueError(f"{key!r} is already declared as {old}; cannot redeclare as {spec}")
        self._specs[key] = spec

    # ----------------------------------------------------------------------------- collecting

    def add(self, key: str, values: torch.Tensor) -> None:
        """Adds per-sample values (any shape, flattened; any device) to the current epoch.

        Nothing is synchronised: the tensors are kept (detached) until :meth:`end_epoch`.
        """
        self._pending.setdefault(key, []).append(values.detach().reshape(-1))

    def keys(self) -> list[str]:
        """Keys with at least one row or pending values."""
        return list(dict.fromkeys([*self._rows, *self._pending]))

    def end_epoch(self, epoch: int) -> dict[str, dict[str, float]]:
        """Closes the epoch: appends one row per key with values and resets the accumulators.

        Args:
            epoch: Epoch number stored in the rows.

        Returns:
            ``{key: {"mean": .., "p10": .., "p50": .., "p90": ..}}`` for the keys with values
            this epoch (NaN statistics where no value was finite).
        """
        summary: dict[str, dict[str, float]] = {}
        pending, self._pending = self._pending, {}
        for key, chunks in pending.items():
            device = chunks[0].device
            dtype = torch.float32 if device.type == "mps" else torch.float64
            values = torch.cat([chunk.to(device=device, dtype=dtype) for chunk in chunks])
            if values.numel() == 0:
                continue
            row = self._row(key, values, epoch)
            self._rows.setdefault(key, []).append(row)
            summary[key] = {name: row[name] for name in ("mean", "p10", "p50", "p90")}
        return summary

    def _row(self, key: str, values: torch.Tensor, epoch: int) -> dict[str, Any]:
        """Computes one table row on the device, then moves it to the host in one transfer."""
        finite = torch.isfinite(values)
        weight = finite.to(values.dtype)
        count = weight.sum()
        safe_count = count.clamp_min(1)
        spec = self._specs.get(key)

        if spec is not None and spec["kind"] == "categorical":
            grid = torch.tensor(spec["grid"], dtype=values.dtype, device=values.device)
            clean = torch.where(finite, values, grid[0])
            index = (clean[:, None] - grid[None, :]).abs().argmin(dim=1)
            bins = grid.numel()
            edges = None
        else:
            if spec is not None:
                edges = torch.tensor(spec["edges"], dtype=values.dtype, device=values.device)
            else:
                low = torch.where(finite, values, math.inf).amin()
                high = torch.where(finite, values, -math.inf).amax()
                low = torch.where(count > 0, low, 0.0)
                high = torch.where(count > 0, high, 1.0)
                span = high - low
                low = torch.where(span > 0, low, low - 0.5)
                span = torch.where(span > 0, span, 1.0)
                steps = torch.arange(self.default_bins + 1, dtype=values.dtype, device=values.device)
                edges = low + span * steps / self.default_bins
            bins = edges.numel() - 1
            clean = torch.where(finite, values, edges[0])
            index = torch.bucketize(clean, edges[1:-1], right=True)
        fractions = torch.bincount(index, weights=weight, minlength=bins)[:bins] / safe_count

        mean = torch.where(finite, values, 0.0).sum() / safe_count
        ordered = torch.where(finite, values, math.inf).sort().values  # non-finite last
        last = (count - 1).clamp_min(0)
        quantiles = []
        for q in _QUANTILES:
            position = q * last
            lower = position.floor()
            upper = position.ceil()
            frac = position - lower
            lo_value = ordered.gather(0, lower.long().reshape(1))
            hi_value = ordered.gather(0, upper.long().reshape(1))
            quantiles.append(lo_value + (hi_value - lo_value) * frac)
        parts = [fractions, mean.reshape(1), *quantiles, count.reshape(1)]
        if edges is not None and spec is None:
            parts.append(edges)
        host = torch.cat(parts).cpu().tolist()

        fractions_host = host[:bins]
        mean_v, p10, p50, p90, n = host[bins : bins + 5]
        n = int(n)
        if n == 0:
            mean_v = p10 = p50 = p90 = math.nan
        row: dict[str, Any] = {"epoch": int(epoch)}
        if spec is not None and spec["kind"] == "categorical":
            row["values"] = list(spec["grid"])
        elif spec is not None:
            row["edges"] = list(spec["edges"])
        else:
            row["edges"] = host[bins + 5 :]
        row.update(fractions=fractions_host, mean=mean_v, p10=p10, p50=p50, p90=p90, n=n)
        return row

    # -------------------------------------------------------------------------------- reading

    def history(self, key: str) -> list[dict[str, Any]]:
        """All rows of ``key`` so far, oldest first (copies)."""
        return [_copy_row(row) for row in self._rows.get(key, [])]

    def state_dict(self) -> dict[str, Any]:
        """Plain-python state (declarations and rows); values of an unfinished epoch are not kept."""
        return {
            "default_bins": self.default_bins,
            "specs": {key: _copy_row(spec) for key, spec in self._specs.items()},
            "rows": {key: [_copy_row(row) for row in rows] for key, rows in self._rows.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict` output (pending values are dropped)."""
        self.default_bins = int(state["default_bins"])
        self._specs = {key: _copy_row(spec) for key, spec in state["specs"].items()}
        self._rows = {key: [_copy_row(row) for row in rows] for key, rows in state["rows"].items()}
        self._pending = {}


def _copy_row(row: dict[str, Any]) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, list) else value for key, value in row.items()}


def artifact_name(key: str) -> str:
    """File-name-safe form of a key (``/`` becomes ``.``)."""
    return key.replace("/", ".").replace("\\", ".")


def log_distributions(
    tracker: Tracker, history: DistributionHistory, epoch: int, prefix: str = "policy"
) -> None:
    """Logs the distributions of every key that has a row for ``epoch`` (call after ``end_epoch``).

    Writes, overwriting the previous epoch's files:

    * ``distributions/<key>.json``: ``{"key", "kind", "rows"}`` with the whole per-epoch table;
    * ``plots/<key>_heatmap.png``: the heat map of the distribution over epochs;

    and the metrics ``<prefix>/<key>_mean``, ``_p10``, ``_p50``, ``_p90`` at step ``epoch``
    (buffered in the tracker). ``/`` in keys becomes ``.`` in file names.
    """
    metrics: dict[str, float] = {}
    for key in history.keys():
        rows = history.history(key)
        if not rows or rows[-1]["epoch"] != epoch:
            continue
        kind = "categorical" if "values" in rows[0] else "histogram"
        name = artifact_name(key)
        tracker.log_dict({"key": key, "kind": kind, "rows": rows}, f"distributions/{name}.json")
        figure = plots.distribution_heatmap(rows, title=f"{prefix}/{key}")
        tracker.log_figure(figure, f"plots/{name}_heatmap.png")
        for stat in ("mean", "p10", "p50", "p90"):
            metrics[f"{prefix}/{key}_{stat}"] = rows[-1][stat]
    if metrics:
        tracker.log_metrics(metrics, step=epoch)
