"""Print a run's policy-choice distributions in the terminal.

Usage::

    python -m runners.inspect run_id=<id> [key=<name>] [tracking_uri=<uri>]

Downloads the run's ``distributions/*.json`` artifacts (written by
:func:`runners.distributions.log_distributions`) and prints, per key, one row per epoch with
the percentage of samples per grid value (or histogram bin) and the mean.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

from runners.distributions import artifact_name
from runners.formatting import format_grid_value

__all__ = ["format_distribution_table", "main"]

VALID_ARGS = ("run_id", "key", "tracking_uri")


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


def format_distribution_table(rows: list[dict[str, Any]], key: str) -> str:
    """Formats per-epoch distribution rows as a fixed-width table.

    Args:
        rows: Rows as stored by :class:`runners.distributions.DistributionHistory`.
        key: Name shown in the title line.

    Returns:
        Title line, header (``epoch``, one column per grid value or bin centre, ``mean``, ``n``)
        and one line per epoch with percentages (one decimal). Histograms whose bin edges
        change between epochs get ``bin1..binB`` columns and a ``range`` column.
    """
    if not rows:
        return f"{key}: no data"
    rows = sorted(rows, key=lambda row: row["epoch"])
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
        cells = [str(row["epoch"]).rjust(5)]
        cells += [f"{100 * f:.1f}".rjust(width) for f in row["fractions"]]
        cells.append(_number(row.get("mean")).rjust(9))
        cells.append(str(row.get("n", "")).rjust(8))
        if varying:
            cells.append(f"[{_number(row['edges'][0])}, {_number(row['edges'][-1])}]")
        lines.append(" ".join(cells))
    return "\n".join(lines)


def _parse(argv: list[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    for token in argv:
        name, sep, value = token.partition("=")
        if not sep or name not in VALID_ARGS:
            raise SystemExit(
                f"unknown argument {token!r}; valid arguments: "
                + ", ".join(f"{n}=<value>" for n in VALID_ARGS)
            )
        args[name] = value
    if not args.get("run_id"):
        raise SystemExit(
            "missing run_id=<id>; usage: python -m runners.inspect run_id=<id> [key=<name>] "
            "[tracking_uri=<uri>]"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m runners.inspect``; returns the exit status."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=args.get("tracking_uri"))
    run_id = args["run_id"]
    files = [
        item.path
        for item in client.list_artifacts(run_id, "distributions")
        if not item.is_dir and item.path.endswith(".json")
    ]
    wanted = args.get("key")
    if wanted is not None:
        files = [p for p in files if Path(p).stem == artifact_name(wanted)]
    if not files:
        target = f"key {wanted!r}" if wanted else "any key"
        print(f"run {run_id}: no distributions/*.json artifacts for {target}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        for artifact in sorted(files):
            local = client.download_artifacts(run_id, artifact, tmp)
            data = json.loads(Path(local).read_text())
            rows = data["rows"] if isinstance(data, dict) else data
            key = data.get("key", Path(artifact).stem) if isinstance(data, dict) else Path(artifact).stem
            print(format_distribution_table(rows, key))
            print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
