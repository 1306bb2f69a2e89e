"""The default thread setting, as a user gets it, alone and beside one CPU hog: the median
training-epoch time alone and the slowdown beside the hog (goal ≤ 2.5). Each cell is a fresh
process (OpenMP reads its environment when torch loads) with the caller's environment minus
OpenMP's variables, and no ``threads=`` override."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKER = ("import json, time; from benchmarks.loop import Stepper, make_run; "
          "t = Stepper(make_run(['policy=pgd_at', 'device=cpu', 'progress=false', "
          "'data.train_subset=256'])); e = []\n"
          "for i in range(4):\n"
          "    s = time.perf_counter(); t.train_epoch(i); e.append(time.perf_counter() - s)\n"
          "print(json.dumps(e))")


def _median_epoch_s(hogs: int) -> float:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    hog = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
    try:
        out = subprocess.run([sys.executable, "-c", WORKER], env=env, cwd=ROOT, check=True,
                             capture_output=True, text=True, timeout=900).stdout
    finally:
        for p in hog:
            p.kill()
            p.wait()
    return statistics.median(json.loads(out.strip().splitlines()[-1])[1:])


def test_contention_default_threads(benchmark):
    cells: dict[str, float] = {}

    def alone_then_hog() -> None:
        cells["alone"] = _median_epoch_s(0)
        cells["hog"] = _median_epoch_s(1)

    benchmark.pedantic(alone_then_hog, rounds=1)
    benchmark.extra_info["alone_epoch_s"] = cells["alone"]
    benchmark.extra_info["hog/alone"] = cells["hog"] / cells["alone"]
