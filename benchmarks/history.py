"""Speed history per commit: record the benchmark suite, compare the working tree with it.

Usage::

    python -m benchmarks.history record    # run benchmarks/suite, keep it for this commit
    python -m benchmarks.history compare   # run it on the working tree, name what moved > 10 %
    python -m benchmarks.history show      # this machine's records

The suite (:mod:`benchmarks.suite`, a few minutes) runs under pytest-benchmark
(``pip install -e '.[bench]'``). ``record`` stores its result under
``benchmarks/history/<machine>/`` (pytest-benchmark's numbered JSON: timing statistics, the commit and
whether the tree was dirty, the machine); ``<machine>`` names the CPU model and core count, so
records of different machines are never compared. ``compare`` runs the suite again without
storing it and compares every figure — each benchmark's fastest round (``min``, the least
disturbed by other processes) and the ratios each benchmark measured with interleaved
repetitions (``extra_info``) — with the latest record of this machine; every figure that moved
by more than ``--threshold`` (10 %) either way is named, and the exit status is 1 when one got
worse (all figures are lower-is-better: seconds and cost ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HISTORY = ROOT / "benchmarks" / "history"
SUITE = ["benchmarks/suite", "-o", "python_files=bench_*.py", "-p", "no:cacheprovider", "-q",
         "--benchmark-only", "--benchmark-disable-gc"]


def machine_id() -> str:
    """The CPU model and core count, as a folder name (stable across hosts and containers of
    one hardware type)."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1]
                break
    except OSError:
        import platform

        model = platform.processor() or platform.machine()
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-") or "cpu"
    return f"{slug}-{os.cpu_count() or 1}cpu"


def figures(result: dict[str, Any]) -> dict[str, float]:
    """{figure: value} of a pytest-benchmark JSON: each benchmark's ``min`` seconds and each
    numeric ``extra_info`` entry."""
    out: dict[str, float] = {}
    for bench in result["benchmarks"]:
        name = bench["fullname"].removeprefix("benchmarks/suite/")
        out[f"{name} min s"] = float(bench["stats"]["min"])
        for key, value in bench.get("extra_info", {}).items():
            if isinstance(value, (int, float)):
                out[f"{name} {key}"] = float(value)
    return out


def moved(old: dict[str, float], new: dict[str, float], threshold: float
          ) -> list[tuple[str, float, float, float]]:
    """(figure, old, new, relative change) of every shared figure that moved more than
    ``threshold`` either way, worst first."""
    rows = [(k, old[k], new[k], new[k] / old[k] - 1) for k in sorted(old.keys() & new.keys())
            if old[k] > 0 and abs(new[k] / old[k] - 1) > threshold]
    return sorted(rows, key=lambda r: -r[3])


def records(machine: str) -> list[Path]:
    """This machine's stored results, oldest first."""
    return sorted((HISTORY / machine).rglob("*.json"), key=lambda p: p.name)


def _run_suite(extra: list[str]) -> int:
    return subprocess.call([sys.executable, "-m", "pytest", *SUITE, *extra], cwd=ROOT)


def _describe(path: Path) -> str:
    info = json.loads(path.read_text())["commit_info"]
    dirty = " (dirty tree)" if info.get("dirty") else ""
    return f"{path.name}: commit {str(info.get('id', '?'))[:10]}{dirty}, {info.get('time', '')}"


def compare(threshold: float) -> int:
    """Run the suite on the working tree and compare it with this machine's latest record."""
    machine = machine_id()
    kept = records(machine)
    if not kept:
        print(f"no record for this machine ({machine}) in {HISTORY.relative_to(ROOT)}: run "
              "`python -m benchmarks.history record` on the commit to compare with", flush=True)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "now.json"
        if _run_suite([f"--benchmark-json={out}"]) != 0:
            return 2
        now = figures(json.loads(out.read_text()))
    last = figures(json.loads(kept[-1].read_text()))
    print(f"\nthe working tree vs {_describe(kept[-1])}; figures that moved more than "
          f"{threshold:.0%}:")
    rows = moved(last, now, threshold)
    for name, old, new, change in rows:
        word = "worse" if change > 0 else "better"
        print(f"  {change:+7.1%} {word:6s} {name}: {old:.4g} -> {new:.4g}")
    if not rows:
        print("  none")
    missing = sorted(last.keys() ^ now.keys())
    if missing:
        print("figures in only one of the two: " + ", ".join(missing))
    return 1 if any(change > 0 for *_, change in rows) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("record", "compare", "show"))
    parser.add_argument("--threshold", type=float, default=0.10,
                        help="relative change that counts as a move (default 0.10)")
    args = parser.parse_args(argv)
    try:
        import pytest_benchmark  # noqa: F401
    except ImportError:
        print("the speed history needs pytest-benchmark: pip install -e '.[bench]'",
              file=sys.stderr)
        return 2
    machine = machine_id()
    if args.command == "show":
        for path in records(machine):
            print(_describe(path))
        return 0
    if args.command == "record":
        (HISTORY / machine).mkdir(parents=True, exist_ok=True)
        return _run_suite(["--benchmark-autosave",
                           f"--benchmark-storage=file://{HISTORY / machine}"])
    return compare(args.threshold)


if __name__ == "__main__":
    raise SystemExit(main())
