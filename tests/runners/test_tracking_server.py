"""A team's tracking store: co-training against ``mlflow server`` on PostgreSQL loses nothing.

One throw-away PostgreSQL cluster and one MLflow server with MLflow's basic-auth app
(artifacts proxied to a local folder) on loopback, as the README's team recipe runs it
(``team_server`` in conftest.py); everything below logs in as alice, a user of the server, the
MLflow way (``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``): two co-trainings run
*at once* against it, then runners.evaluate, inspect and compare read them back through HTTP,
and an interrupted run resumes from the checkpoint the server holds after its local copy was
deleted. Skipped where PostgreSQL or psycopg is missing; runs with ``pytest --integration``
(``.ci/run``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from learned_at.runners import compare, evaluate, inspect
from learned_at.runners.cotrain import cotrain
from learned_at.runners.run_loading import load_run_state
from tests.helpers import run_command
from tests.runners.conftest import ALICE, log_in, login_env, run_interrupted

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[2]
TINY = ["epochs=2", "batch_size=64", "data.train_subset=256", "data.test_subset=128",
        "eval.test_subset=64", "eval.final_pgd_steps=3", "monitor.enabled=false",
        "progress=false", "threads=1"]
RUN_A = ["policy=pgd_at", "policy.steps=2", "seed=0", *TINY]
RUN_B = ["policy=fgsm_rs", "seed=1", *TINY]
PER_EPOCH = ("train/loss", "train/adv_acc", "test/clean_acc", "test/pgd_acc", "time/epoch_s")


@pytest.fixture
def server(team_server, monkeypatch):
    """The team server, this process logged in as alice."""
    log_in(monkeypatch, ALICE)
    return team_server[1]


def _start(args: list[str], uri: str, cwd: Path) -> subprocess.Popen:
    env = {**login_env(ALICE), "MLFLOW_TRACKING_URI": uri,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "learned_at.runners.cotrain", *args],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _run_id(output: str) -> str:
    match = re.search(r"^run_id=(\w+)$", output, re.MULTILINE)
    assert match, output[-3000:]
    return match.group(1)


def _two_runs_at_once(uri: str, tmp_path: Path) -> tuple[str, str]:
    procs = [_start([*RUN_A, f"checkpoint_dir={tmp_path}/ck_a"], uri, tmp_path),
             _start([*RUN_B, f"checkpoint_dir={tmp_path}/ck_b"], uri, tmp_path)]
    try:
        outputs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    return _run_id(outputs[0]), _run_id(outputs[1])


def _check_nothing_lost(client: MlflowClient, run_id: str) -> None:
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in PER_EPOCH:
        steps = sorted(m.step for m in client.get_metric_history(run_id, key))
        assert steps == [0, 1], (key, steps)
    assert {"eval/clean_acc", "eval/pgd3_acc"} <= set(run.data.metrics)
    assert "checkpoints/last.pt" in {a.path for a in client.list_artifacts(run_id, "checkpoints")}
    assert client.list_artifacts(run_id, "distributions")


def _interrupt_then_resume_from_server(uri: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> str:
    """RUN_A cut at the start of epoch 2, its local checkpoint deleted, resumed from MLflow."""
    checkpoints = tmp_path / "ck_cut"
    cut = run_interrupted([*RUN_A, f"checkpoint_dir={checkpoints}"], uri, monkeypatch)
    shutil.rmtree(checkpoints)  # only the server's copy is left
    assert cotrain([f"resume={cut}", f"checkpoint_dir={checkpoints}"], uri) == cut
    return cut


def test_cotraining_against_postgres_backed_server(server, tmp_path, monkeypatch, capsys,
                                                   one_thread):
    uri = server.uri
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run_a, run_b = _two_runs_at_once(uri, tmp_path)
    client = MlflowClient(uri)
    for run_id in (run_a, run_b):
        _check_nothing_lost(client, run_id)
    # the artifacts live in the server's destination, not in a client-side folder
    assert list(server.artifacts.rglob("last.pt"))
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlartifacts").exists()

    # evaluate: the checkpoint comes from the server (empty local checkpoint folder)
    assert run_command(evaluate.main, [f"run_id={run_a}", "attacks=[clean,pgd3]", "n_examples=64",
                          f"checkpoint_dir={tmp_path}/empty", "progress=false"]) == 0
    assert run_command(inspect.main, [f"run_id={run_a}", f"tracking_uri={uri}"]) == 0
    capsys.readouterr()
    assert run_command(compare.main, [f"run_ids=[{run_a},{run_b}]", "pgd=pgd3", "log=false",
                         f"tracking_uri={uri}"]) == 0
    table = capsys.readouterr().out
    row_a = next(line for line in table.splitlines() if run_a[:8] in line)
    row_b = next(line for line in table.splitlines() if run_b[:8] in line)
    assert "pgd_at" in row_a and "fgsm_rs" in row_b
    pgd_cell = row_a.split("|")[5].strip()
    assert re.fullmatch(r"\d+\.\d\d", pgd_cell), row_a  # PGD-3 accuracy read back

    # resume from the server's artifact: same weights and metrics as the uninterrupted run
    cut = _interrupt_then_resume_from_server(uri, tmp_path, monkeypatch)
    _check_nothing_lost(client, cut)
    full_state = load_run_state(run_a, f"{tmp_path}/ck_a")["model"]
    cut_state = load_run_state(cut, f"{tmp_path}/ck_cut")["model"]
    for key in full_state:
        assert torch.equal(full_state[key], cut_state[key]), key
    full, resumed = client.get_run(run_a).data.metrics, client.get_run(cut).data.metrics
    assert resumed["test/pgd_acc"] == full["test/pgd_acc"]
