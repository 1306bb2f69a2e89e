"""Per-epoch distributions of per-sample policy choices (e.g. the eps a strategy head picks).

:class:`DistributionHistory` collects per-sample values during an epoch without touching the
host, and turns them at the end of the epoch into one table row per key (one device-to-host
transfer per key):

* categorical keys (:meth:`DistributionHistory.declare`): the fraction of samples at each value
  of a fixed grid (values off the grid count for the nearest grid value);
* histogram keys: the fraction of samples in each bin, over fixed edges
  (:meth:`DistributionHistory.declare_hist`; values outside are counted in the first/last bin)
  or, for undeclared keys, ``default_bins`` equal bins between the epoch's min and max;
* undeclared keys whose epoch values take at most ``max_categories`` distinct values (a
  constant budget, an iteration count) are categorical over those values, so a constant shows
  as one value, not as a band of bins around it.

Every row also holds ``mean``, ``p10``, ``p50``, ``p90`` and ``n`` (number of finite values;
NaN and ±inf are left out of every statistic). :func:`log_distributions` writes the whole
history of a key as one long-format MLflow table (:func:`distribution_table`, one line per
epoch and value or bin; ``epoch`` counts from 1 as the co-training prints it, ``step`` is the
MLflow step) and a heat map to a :class:`~runners.tracking.Tracker`. Tables of several runs
load into one DataFrame with ``MlflowClient().load_table(experiment_id,
"distributions/<key>.json", run_ids=[...], extra_columns=["run_id"])``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from learned_at.runners import plots

if TYPE_CHECKING:
    from learned_at.runners.tracking import Tracker

__all__ = ["DistributionHistory", "aligned_rows", "as_histogram", "distribution_metrics",
           "distribution_table", "is_constant", "log_distributions", "rows_from_table"]

_QUANTILES = (0.1, 0.5, 0.9)


class DistributionHistory:
    """Accumulates per-epoch distributions of per-sample values, per key.

    Args:
        default_bins: Number of bins of undeclared keys (between the epoch's min and max).
        max_categories: Undeclared keys with at most this many distinct finite values in an
            epoch get a categorical row over those values (0: always a histogram).
    """

    def __init__(self, default_bins: int = 20, max_categories: int = 0) -> None:
        if default_bins < 1:
            raise ValueError(f"default_bins must be positive, got {default_bins}")
        self.default_bins = default_bins
        self.max_categories = max_categories
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
        if spec is None and self.max_categories > 0:
            distinct = torch.unique(values[finite])  # one host sync per key and epoch
            if 0 < distinct.numel() <= self.max_categories:
                spec = {"kind": "categorical", "grid": distinct.tolist()}

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

    def state_dict(self, include_pending: bool = False) -> dict[str, Any]:
        """Plain-python state (declarations and rows); with ``include_pending`` also the values
        of the unfinished epoch (``"pending"``: key -> float64 CPU tensor), for a checkpoint
        written in the middle of an epoch."""
        state: dict[str, Any] = {
            "default_bins": self.default_bins,
            "max_categories": self.max_categories,
            "specs": {key: _copy_row(spec) for key, spec in self._specs.items()},
            "rows": {key: [_copy_row(row) for row in rows] for key, rows in self._rows.items()},
        }
        if include_pending:
            state["pending"] = {
                key: torch.cat([c.to(dtype=torch.float64) for c in chunks]).cpu()
                for key, chunks in self._pending.items() if chunks}
        return state

    def load_state_dict(self, state: dict[str, Any], device: torch.device | None = None) -> None:
        """Restores :meth:`state_dict` output; pending values (if saved) go to ``device``."""
        self.default_bins = int(state["default_bins"])
        self.max_categories = int(state.get("max_categories", 0))
        self._specs = {key: _copy_row(spec) for key, spec in state["specs"].items()}
        self._rows = {key: [_copy_row(row) for row in rows] for key, rows in state["rows"].items()}
        self._pending = {key: [values.to(device) if device is not None else values]
                         for key, values in state.get("pending", {}).items()}


def _copy_row(row: dict[str, Any]) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, list) else value for key, value in row.items()}


def artifact_name(key: str) -> str:
    """File-name-safe form of a key (``/`` becomes ``.``)."""
    return key.replace("/", ".").replace("\\", ".")


def as_histogram(row: dict[str, Any]) -> dict[str, Any]:
    """A categorical row as a histogram row: one bin per value, bounded by the midpoints to its
    neighbours (a lone value gets a bin of ±5% around it)."""
    if "values" not in row:
        return _copy_row(row)
    pairs = sorted(zip((float(v) for v in row["values"]), row["fractions"]))
    values = [v for v, _ in pairs]
    if len(values) == 1:
        half = max(abs(values[0]) * 0.05, 1e-6)
        edges = [values[0] - half, values[0] + half]
    else:
        mids = [(a + b) / 2 for a, b in zip(values, values[1:])]
        edges = [values[0] - (mids[0] - values[0]), *mids, values[-1] + (values[-1] - mids[-1])]
    out = {k: v for k, v in _copy_row(row).items() if k != "values"}
    out.update(edges=edges, fractions=[f for _, f in pairs])
    return out


def aligned_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows ready to show side by side, sorted by epoch: categorical rows over one common list
    of values (the union over epochs, sorted; a value an epoch did not use has fraction 0);
    histogram rows unchanged. An undeclared key can be categorical in some epochs (few
    distinct values) and a histogram in others: then every row becomes a histogram row
    (:func:`as_histogram`)."""
    rows = sorted(rows, key=lambda row: row["epoch"])
    kinds = {"values" in row for row in rows}
    if kinds == {True, False}:
        return [as_histogram(row) for row in rows]
    if not rows or "values" not in rows[0]:
        return [_copy_row(row) for row in rows]
    values = sorted({float(v) for row in rows for v in row["values"]})
    out = []
    for row in rows:
        share = dict(zip((float(v) for v in row["values"]), row["fractions"]))
        out.append({**_copy_row(row), "values": values,
                    "fractions": [share.get(v, 0.0) for v in values]})
    return out


def is_constant(rows: list[dict[str, Any]]) -> bool:
    """Every sample of every epoch had the same value (a categorical key with one value)."""
    rows = aligned_rows(rows)
    return bool(rows) and "values" in rows[0] and len(rows[0]["values"]) == 1


def distribution_table(key: str, rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """A key's history in long format: one line per (epoch, value) or (epoch, bin).

    Columns: ``key``, ``kind`` (categorical / histogram), ``epoch`` (1-based, as the
    co-training prints it), ``step`` (the MLflow step: epoch − 1), ``value`` (the category, or
    the bin centre), ``bin_low`` / ``bin_high`` (histograms; None for categories),
    ``fraction`` of the epoch's samples, ``n`` (finite values in the epoch), ``mean`` (the
    epoch's mean value).
    """
    columns: dict[str, list[Any]] = {name: [] for name in (
        "key", "kind", "epoch", "step", "value", "bin_low", "bin_high", "fraction", "n", "mean")}

    def add(row: dict[str, Any], kind: str, value: float, low: float | None,
            high: float | None, fraction: float) -> None:
        for name, item in zip(columns, (key, kind, int(row["epoch"]) + 1, int(row["epoch"]),
                                        value, low, high, fraction, int(row.get("n", 0)),
                                        _finite_or_none(row.get("mean")))):
            columns[name].append(item)

    for row in aligned_rows(rows):
        if "values" in row:
            for value, fraction in zip(row["values"], row["fractions"]):
                add(row, "categorical", float(value), None, None, float(fraction))
        else:
            edges = row["edges"]
            for low, high, fraction in zip(edges, edges[1:], row["fractions"]):
                add(row, "histogram", (low + high) / 2, float(low), float(high), float(fraction))
    return columns


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def rows_from_table(table: dict[str, list[Any]] | Any) -> list[dict[str, Any]]:
    """The inverse of :func:`distribution_table` (rows with 0-based ``epoch``), from its
    columns or from a DataFrame (``mlflow.load_table``)."""
    if not isinstance(table, dict):
        table = {name: list(table[name]) for name in table.columns}
    by_step: dict[int, dict[str, Any]] = {}
    for i, step in enumerate(table["step"]):
        mean = table["mean"][i] if "mean" in table else None
        row = by_step.setdefault(int(step), {"epoch": int(step), "fractions": [],
                                             "n": int(table["n"][i]),
                                             "mean": math.nan if mean is None else float(mean)})
        row["fractions"].append(float(table["fraction"][i]))
        if table["kind"][i] == "categorical":
            row.setdefault("values", []).append(float(table["value"][i]))
        else:
            edges = row.setdefault("edges", [float(table["bin_low"][i])])
            edges.append(float(table["bin_high"][i]))
    return [by_step[s] for s in sorted(by_step)]


def log_distributions(
    tracker: Tracker, history: DistributionHistory, epoch: int, prefix: str = "policy",
    log_metrics: bool = True, plot: bool = True,
) -> dict[str, float]:
    """Logs the distributions of every key that has a row for ``epoch`` (call after ``end_epoch``).

    Writes, replacing the previous epoch's files:

    * ``distributions/<key>.json``: the whole per-epoch history as a long-format MLflow table
      (:func:`distribution_table`);
    * ``plots/<key>_heatmap.png``: the heat map of the distribution over epochs (with
      ``plot``; not for a key that has been one constant value so far: its metrics say
      everything);

    and the metrics ``<prefix>/<key>_mean``, ``_p10``, ``_p50``, ``_p90`` at step ``epoch``
    (buffered in the tracker; with ``log_metrics=False`` only returned). ``/`` in keys becomes
    ``.`` in file names.

    Returns:
        The metrics.
    """
    for key in history.keys():
        rows = history.history(key)
        if not rows or rows[-1]["epoch"] != epoch:
            continue
        name = artifact_name(key)
        tracker.log_table(distribution_table(key, rows), f"distributions/{name}.json")
        if plot and not is_constant(rows):
            shown = [{**row, "epoch": row["epoch"] + 1} for row in aligned_rows(rows)]
            figure = plots.distribution_heatmap(shown, title=f"{prefix}/{key}")
            tracker.log_figure(figure, f"plots/{name}_heatmap.png")
    metrics = distribution_metrics(history, epoch, prefix)
    if metrics and log_metrics:
        tracker.log_metrics(metrics, step=epoch)
    return metrics


def distribution_metrics(history: DistributionHistory, epoch: int, prefix: str = "policy"
                         ) -> dict[str, float]:
    """``<prefix>/<key>_{mean,p10,p50,p90}`` of every key that has a row for ``epoch`` (what
    :func:`log_distributions` logs), computed without logging anything."""
    metrics: dict[str, float] = {}
    for key in history.keys():
        rows = history.history(key)
        if rows and rows[-1]["epoch"] == epoch:
            for stat in ("mean", "p10", "p50", "p90"):
                metrics[f"{prefix}/{key}_{stat}"] = rows[-1][stat]
    return metrics
