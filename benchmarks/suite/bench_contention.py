"""The default thread setting alone and beside one CPU hog (benchmarks/contention.py, quick):
the epoch time alone and the slowdown beside the hog (goal ≤ 2.5)."""

from __future__ import annotations

import argparse

from benchmarks.contention import _cell


def test_contention_default_threads(benchmark):
    args = argparse.Namespace(workload="digits", subset=256, policy="pgd_at", data_root="",
                              epochs=3, timeout=600.0)
    cells = {}

    def alone_then_hog() -> None:
        cells["alone"] = _cell("adaptive", 0, args)
        cells["hog"] = _cell("adaptive", 1, args)

    benchmark.pedantic(alone_then_hog, rounds=1)
    benchmark.extra_info["alone_epoch_s"] = cells["alone"]["epoch_s"]
    benchmark.extra_info["hog/alone"] = cells["hog"]["epoch_s"] / cells["alone"]["epoch_s"]
