"""Print a run's policy-choice distributions in the terminal.

Usage::

    python -m runners.inspect run_id=<id> [key=<name>] [tracking_uri=<uri>]

Reads the run's ``distributions/*.json`` tables (written by
:func:`runners.distributions.log_distributions`) and prints, per key, one row per epoch
(numbered from 1, as the co-training prints them) with the percentage of samples per value
(categorical keys, one column per value the policy used) or per histogram bin, and the mean.
A key that held one value for every sample of every epoch is one line.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from learned_at.envs.options import setting
from learned_at.runners.cli import UsageError, exit_on_error, run_cli
from learned_at.runners.config_store import register_command
from learned_at.runners.distributions import (aligned_rows, artifact_name, is_constant,
                                              rows_from_table)
from learned_at.runners.formatting import format_grid_value

__all__ = ["InspectArgs", "format_distribution_table", "main"]

PROG = "runners.inspect"


@dataclass(frozen=True)
class InspectArgs:
    """Arguments of ``python -m runners.inspect``."""

    run_id: str = setting("", "the MLflow run (required)")
    key: str = setting("", "show only this distribution (e.g. eps, steps); empty = every key")
    tracking_uri: str = setting("", "MLflow tracking URI; empty = MLflow's default "
                                "(MLFLOW_TRACKING_URI or ./mlflow.db)")


def _columns(rows: list[dict[str, Any]]) -> tuple[list[str], bool]:
    """Column labels and whether the histogram edges differ between rows."""
    first = rows[0]
    if "values" in first:
        return [format_grid_value(float(v), first["values"]) for v in first["values"]], False
    edges = first["edges"]
    if all(row["edges"] == edges for row in rows):
        centres = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
        return [format_grid_value(c, centres) for c in centres], False
    return [f"bin{i + 1}" for i in range(len(first["fractions"]))], True


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.4g}"


def _epochs(rows: list[dict[str, Any]]) -> str:
    first, last = rows[0]["epoch"] + 1, rows[-1]["epoch"] + 1
    return f"epoch {first}" if first == last else f"epochs {first}-{last}"


def format_distribution_table(rows: list[dict[str, Any]], key: str) -> str:
    """Formats per-epoch distribution rows as a fixed-width table.

    Args:
        rows: Rows as stored by :class:`runners.distributions.DistributionHistory` (``epoch``
            0-based; printed from 1).
        key: Name shown in the title line.

    Returns:
        A key whose every sample had one value: one line. Otherwise a title line, a header
        (``epoch``, one column per value used in any epoch or per bin centre, ``mean``, ``n``)
        and one line per epoch with percentages (one decimal). Histograms whose bin edges
        change between epochs get ``bin1..binB`` columns and a ``range`` column.
    """
    if not rows:
        return f"{key}: no data"
    rows = aligned_rows(rows)
    if is_constant(rows):
        value = format_grid_value(float(rows[0]["values"][0]))
        return f"{key}: {value} for every sample ({_epochs(rows)})"
    labels, varying = _columns(rows)
    kind = "categorical" if "values" in rows[0] else "histogram"
    width = max(6, *(len(label) for label in labels))
    header = ["epoch".rjust(5), *(label.rjust(width) for label in labels), "mean".rjust(9)]
    header.append("n".rjust(8))
    if varying:
        header.append("range")
    lines = [f"{key} ({kind}, % of samples per {'value' if kind == 'categorical' else 'bin'})"]
    lines.append(" ".join(header))
    for row in rows:
        cells = [str(row["epoch"] + 1).rjust(5)]
        cells += [f"{100 * f:.1f}".rjust(width) for f in row["fractions"]]
        cells.append(_number(row.get("mean")).rjust(9))
        cells.append(str(row.get("n", "")).rjust(8))
        if varying:
            cells.append(f"[{_number(row['edges'][0])}, {_number(row['edges'][-1])}]")
        lines.append(" ".join(cells))
    return "\n".join(lines)


def _read(path: Path) -> tuple[str | None, list[dict[str, Any]]]:
    """(key, rows) of a distributions artifact: a table, or the older {"key", "rows"} JSON."""
    data = json.loads(path.read_text())
    if isinstance(data, dict) and "columns" in data:  # a table (pandas orient="split")
        table = {c: [row[i] for row in data["data"]] for i, c in enumerate(data["columns"])}
        key = table["key"][0] if table.get("key") else None
        return key, rows_from_table(table)
    if isinstance(data, dict):
        return data.get("key"), data["rows"]
    return None, data


def inspect_run(args: InspectArgs) -> None:
    """Print every distribution table of ``args.run_id`` (or the one of ``args.key``)."""
    if not args.run_id:
        raise UsageError("run_id=<id> is required (see --help)")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # no download bars here
    from mlflow import MlflowClient

    from learned_at.runners.run_store import get_run

    client = MlflowClient(tracking_uri=args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
                          or None)
    get_run(client, args.run_id)  # an unknown id: one line, status 2
    files = [item.path for item in client.list_artifacts(args.run_id, "distributions")
             if not item.is_dir and item.path.endswith(".json")]
    if args.key:
        files = [p for p in files if Path(p).stem == artifact_name(args.key)]
    if not files:
        target = f"key {args.key!r}" if args.key else "any key"
        print(f"{PROG}: run {args.run_id} has no distributions/*.json tables for {target}",
              file=sys.stderr)
        raise SystemExit(1)
    with tempfile.TemporaryDirectory() as tmp:
        for artifact in sorted(files):
            key, rows = _read(Path(client.download_artifacts(args.run_id, artifact, tmp)))
            print(format_distribution_table(rows, key or Path(artifact).stem))
            print()


def _job(cfg: DictConfig) -> None:
    args: InspectArgs = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    exit_on_error(PROG, lambda: inspect_run(args),
                  tracking_uri=args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))


_task = hydra.main(config_path=None, config_name="inspect", version_base="1.3")(_job)


def main() -> int:
    """Console-script entry point (``lat-inspect``); returns the exit status."""
    register_command("inspect", InspectArgs)
    return run_cli(PROG, _task, "inspect")


if __name__ == "__main__":
    raise SystemExit(main())
