"""Sweeps: every run of a multirun carries one sweep_id, and runners.compare finds the grid by it.

The in-process test uses Hydra's basic launcher; the ``launcher`` test launches the same kind of
grid through the submitit launcher's local executor (subprocesses, as on SLURM).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from learned_at.runners import compare
from learned_at.runners.cotrain import main
from learned_at.runners.sweeper import SWEEP_TAG, compare_command, new_sweep_id, sweep_runs
from tests.helpers import run_command

ROOT = Path(__file__).resolve().parents[2]
TINY = ["epochs=1", "batch_size=64", "data.train_subset=128", "data.test_subset=64",
        "eval.test_subset=32", "eval.final_pgd_steps=2", "monitor.enabled=false",
        "progress=false", "threads=1"]


def _sweep_id(stdout: str) -> str:
    match = re.search(rf"^{SWEEP_TAG}=(\S+)$", stdout, re.MULTILINE)
    assert match, stdout
    return match.group(1)


def _check_grid(uri: str, sweep_id: str, capsys: pytest.CaptureFixture) -> None:
    runs = sweep_runs(sweep_id, uri)
    assert sorted(r.data.tags["policy"] for r in runs) == ["fgsm_rs", "pgd_at"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    # the documented filter picks up exactly the grid, in every experiment of the store
    client = MlflowClient(uri)
    found = compare.find_runs(client, [], "", f"tags.{SWEEP_TAG} = '{sweep_id}'")
    assert {r.info.run_id for r in found} == {r.info.run_id for r in runs}
    capsys.readouterr()
    assert run_command(compare.main, [f"sweep_id={sweep_id}", f"tracking_uri={uri}"]) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| ") and "run " not in line]
    assert len(rows) == 2 and any("pgd_at" in r for r in rows) and any("fgsm_rs" in r for r in rows)


def test_sweep_ids_are_unique_and_sortable():
    a, b = new_sweep_id(), new_sweep_id()
    assert a != b and re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", a)
    assert compare_command(a) == f"python -m runners.compare sweep_id={a}"


def test_in_process_sweep_tags_every_run(tracking_uri, monkeypatch, capsys, one_thread):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    assert run_command(main, ["-m", "policy=pgd_at,fgsm_rs", *TINY, "checkpoint_dir=ck"]) == 0
    out = capsys.readouterr().out
    sweep_id = _sweep_id(out)
    assert len(re.findall(r"^run_id=", out, re.MULTILINE)) == 2
    assert "2 runs (2 FINISHED)" in out and compare_command(sweep_id) in out
    assert Path("multirun", sweep_id).is_dir()  # the sweep's folder is named by its id
    _check_grid(tracking_uri, sweep_id, capsys)


@pytest.mark.launcher
def test_sweep_through_submitit_local_executor(tmp_path, tracking_uri, capsys):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="needs the cluster extra: pip install -e '.[cluster]'")
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "learned_at.runners.cotrain", "-m", "policy=pgd_at,fgsm_rs", *TINY,
           f"checkpoint_dir={tmp_path}/ck", "hydra/launcher=submitit_local",
           "hydra.launcher.timeout_min=10"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sweep_id = _sweep_id(done.stdout)
    logs = list((tmp_path / "multirun" / sweep_id / ".submitit").rglob("*_log.out"))
    assert len(logs) == 2  # each point ran as its own submitit job
    assert all("run_id=" in log.read_text() for log in logs)
    _check_grid(tracking_uri, sweep_id, capsys)
