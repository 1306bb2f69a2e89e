"""A team's tracking server as a team uses it (``--integration``, marker ``server``): MLflow's
basic-auth app on PostgreSQL (``team_server`` in conftest.py), a cluster's scheduler that
starts a run's resume twice, and a server that goes away in the middle of a run.

* Nobody in who does not belong: an anonymous client and a wrong password are refused, a user
  without permission on a colleague's experiment cannot write to it — each command says so in
  one line (exit status 2).
* One writer per run: after ``kill -9``, three resumes start at once (two on this machine,
  one "elsewhere" with its own checkpoint folder, sharing only the server): exactly one
  continues, the others stop before any work naming the holder, and the run equals the
  uninterrupted one, every epoch logged once.
* Tracking outages: the server killed and restarted on its port within MLflow's retries is
  ridden out; killed for longer than the retries, the run checkpoints and stops with one line
  and its resume command, and that command completes it. MLflow's retries are shortened for
  the test (6 retries, backoff factor 1, no jitter: 0 + 2 + 4 + 8 + 16 + 32 = 62 s; the
  default is 244 s, runners/tracking_errors.py).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from learned_at.runners import compare, cotrain, evaluate
from learned_at.runners.tracking_errors import retry_seconds
from tests.helpers import one_line, run_command
from tests.runners.conftest import (ALICE, BOB, assert_same_training, final_state, log_in,
                                    login_env, metric_histories)
from tests.runners.tracking_server import grant, mlflow_server

pytestmark = [pytest.mark.server, pytest.mark.usefixtures("one_thread")]

ROOT = Path(__file__).resolve().parents[2]
RUN = ["policy=pgd_at", "policy.steps=2", "seed=0", "epochs=4", "batch_size=64",
       "data.train_subset=512", "data.test_subset=128", "eval.test_subset=64",
       "eval.final_pgd_steps=3", "monitor.enabled=false", "progress=false", "threads=1",
       "tracking.system_metrics=false", "tracking.log_model=false", "tracking.plot_every=2"]
#: MLflow's retries in the training processes of the outage test (62 s in all)
SHORT_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "6", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"}


class Command:
    """A command of the project in a subprocess, its output collected as it comes."""

    def __init__(self, args: list[str], uri: str, login: tuple[str, str] | None, cwd: Path,
                 env: dict[str, str] | None = None, module: str = "cotrain") -> None:
        environment = {**login_env(login), "MLFLOW_TRACKING_URI": uri, "MPLBACKEND": "Agg",
                       "PYTHONPATH": os.pathsep.join([str(ROOT),
                                                      os.environ.get("PYTHONPATH", "")]),
                       **(env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"learned_at.runners.{module}", *args], cwd=cwd,
            env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 600) -> None:
        """Until a line matches ``pattern`` (the process must still run)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(re.search(pattern, line) for line in list(self.lines)):
                return
            if self.process.poll() is not None:
                self._reader.join(timeout=10)
                raise AssertionError(f"ended ({self.process.returncode}) before {pattern!r}:\n"
                                     f"{self.output[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} after {timeout} s:\n{self.output[-3000:]}")

    def finish(self, timeout: float = 900) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=10)
        return code

    def last_line(self) -> str:
        """The one line the command says about why it stopped (no traceback around it)."""
        assert "Traceback" not in self.output, self.output[-3000:]
        said = [line for line in self.lines if line.startswith("runners.")]
        assert len(said) == 1, self.output[-3000:]
        return said[0]


def _run_id(command: Command) -> str:
    match = re.search(r"^run_id=(\w+)$", command.output, re.MULTILINE)
    assert match, command.output[-3000:]
    return match.group(1)


def _only_run(client: MlflowClient, experiment: str) -> str:
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return run.info.run_id


# ---------------------------------------------------------------------------- authentication

def test_an_anonymous_client_and_a_wrong_password_are_refused(team_server, tmp_path, monkeypatch,
                                                              capsys):
    server = team_server[1]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials of this machine
    log_in(monkeypatch, None)
    with pytest.raises(MlflowException) as refused:
        MlflowClient(server.uri).search_experiments()
    assert refused.value.error_code == "UNAUTHENTICATED"
    assert run_command(compare.main, ["experiment=learned-at", "log=false",
                                      f"tracking_uri={server.uri}"]) == 2
    line = one_line(capsys, "runners.compare")
    assert f"the tracking server {server.uri} asks for a login (HTTP 401)" in line
    assert "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in line

    log_in(monkeypatch, (ALICE[0], "not-her-password"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    assert run_command(cotrain.main, [*RUN, "experiment=refused"]) == 2
    line = one_line(capsys, "runners.cotrain")
    assert line == (f"runners.cotrain: the tracking server {server.uri} refused the login of "
                    "user 'alice' while writing to experiment 'refused' (HTTP 401: wrong "
                    "password or unknown user); check MLFLOW_TRACKING_USERNAME and "
                    "MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials)")


def test_a_user_without_permission_cannot_write_to_a_colleagues_experiment(
        team_server, tmp_path, monkeypatch, capsys):
    server = team_server[1]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    log_in(monkeypatch, ALICE)
    alice = MlflowClient(server.uri)
    experiment = alice.create_experiment("alice-only")
    alices_run = alice.create_run(experiment).info.run_id

    log_in(monkeypatch, BOB)
    bob = MlflowClient(server.uri)
    assert bob.get_run(alices_run).info.run_id == alices_run  # the server's default: READ
    for write in (lambda: bob.create_run(experiment),
                  lambda: bob.set_tag(alices_run, "mine", "now"),
                  lambda: bob.log_param(alices_run, "lease.1", "bob")):
        with pytest.raises(MlflowException) as denied:
            write()
        assert denied.value.error_code == "PERMISSION_DENIED"
    assert run_command(cotrain.main, [*RUN, "experiment=alice-only"]) == 2
    line = one_line(capsys, "runners.cotrain")
    assert line.startswith(f"runners.cotrain: the tracking server {server.uri} denied user "
                           "'bob' permission while writing to experiment 'alice-only' (HTTP "
                           "403); ask the experiment's owner or an admin to grant EDIT on it")
    assert run_command(cotrain.main, [f"resume={alices_run}",
                                      f"checkpoint_dir={tmp_path}/ck"]) == 2
    line = one_line(capsys, "runners.cotrain")
    assert f"denied user 'bob' permission while claiming run {alices_run} (HTTP 403)" in line

    grant(server, ALICE, BOB[0], experiment, "EDIT")  # the owner lets bob in
    assert bob.create_run(experiment).info.experiment_id == experiment


# ---------------------------------------------------------------------- one writer per run

def test_two_resumes_at_once_exactly_one_continues(team_server, tmp_path, monkeypatch,
                                                   reference_run, capsys):
    server = team_server[1]
    log_in(monkeypatch, ALICE)
    args = [*RUN, "experiment=double-resume"]
    ref_uri, ref_id, ref_ck = reference_run(args)
    here, elsewhere = tmp_path / "ck", tmp_path / "elsewhere"
    first = Command([*args, f"checkpoint_dir={here}"], server.uri, ALICE, tmp_path)
    first.wait_for(r"INFO epoch 1/4 ")
    first.process.send_signal(signal.SIGKILL)
    assert first.finish() == -signal.SIGKILL
    client = MlflowClient(server.uri)
    run_id = _only_run(client, "double-resume")
    assert client.get_run(run_id).info.status == "RUNNING"

    # a scheduler's requeue and a person's retry here, an array task given the same id there
    resumes = [Command([f"resume={run_id}", f"checkpoint_dir={folder}"], server.uri, ALICE,
                       tmp_path) for folder in (here, here, elsewhere)]
    codes = [r.finish() for r in resumes]
    assert sorted(codes) == [0, 2, 2], [r.output[-2000:] for r in resumes]
    winner = codes.index(0)
    for index, resume in enumerate(resumes):
        if index != winner:
            line = resume.last_line()
            assert line.startswith(f"runners.cotrain: run {run_id} is already being written "), line
            assert re.search(r"by host \S+, process \d+ \(since \d{4}-\d\d-\d\d ", line) or \
                "by another process" in line, line
            assert "epoch" not in resume.output  # stopped before any work
    folder = str((here, here, elsewhere)[winner])
    assert_same_training(final_state(run_id, folder), final_state(ref_id, ref_ck))
    assert metric_histories(server.uri, run_id) == metric_histories(ref_uri, ref_id)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert sorted(k for k in run.data.params if k.startswith("lease.")) == ["lease.1", "lease.2"]

    # the user with permission evaluates it (its checkpoint fetched through the server: no
    # local folder) and compares the experiment
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    assert run_command(evaluate.main, [f"run_id={run_id}", "attacks=[clean,pgd2]",
                                       "n_examples=32", "progress=false",
                                       f"checkpoint_dir={tmp_path}/none"]) == 0
    out = capsys.readouterr().out
    assert "| pgd2 |" in out, out
    eval_id = next(line.split("=", 1)[1] for line in out.splitlines()
                   if line.startswith("evaluation_run_id="))
    assert "eval/pgd2_acc" in client.get_run(eval_id).data.metrics
    assert run_command(compare.main, ["experiment=double-resume", "log=false"]) == 0
    assert run_id[:8] in capsys.readouterr().out


# ------------------------------------------------------------------------- tracking outages

def test_tracking_outages_lose_no_epoch(team_server, tmp_path, monkeypatch, reference_run):
    cluster, _, auth = team_server
    log_in(monkeypatch, ALICE)
    window = retry_seconds(SHORT_RETRIES)
    assert window == 62
    with mlflow_server(cluster.uri, tmp_path / "own-server", auth=auth) as server:
        assert server.process is not None
        client = MlflowClient(server.uri)

        # shorter than the retries: ridden out
        args = [*RUN, "experiment=short-outage"]
        ref_uri, ref_id, ref_ck = reference_run(args)
        run = Command([*args, f"checkpoint_dir={tmp_path}/short"], server.uri, ALICE, tmp_path,
                      SHORT_RETRIES)
        run.wait_for(r"INFO epoch 1/4 ")
        server.process.kill()
        outage = server.process.start()  # on the same port
        print(f"short outage: the server was back after {outage:.1f} s")
        assert outage < window - 10, f"the restart took {outage:.0f} s: not a short outage"
        assert run.finish() == 0, run.output[-3000:]
        run_id = _run_id(run)
        assert metric_histories(server.uri, run_id) == metric_histories(ref_uri, ref_id)
        assert client.get_run(run_id).info.status == "FINISHED"

        # longer than the retries: a checkpoint, one line with the resume command, the resume
        args = [*RUN, "experiment=long-outage"]
        ref_uri, ref_id, ref_ck = reference_run(args)
        run = Command([*args, f"checkpoint_dir={tmp_path}/long"], server.uri, ALICE, tmp_path,
                      SHORT_RETRIES)
        run.wait_for(r"INFO epoch 1/4 ")
        server.process.kill()
        down = time.monotonic()
        assert run.finish() == 2, run.output[-3000:]
        print(f"long outage: the run stopped {time.monotonic() - down:.1f} s after the kill")
        assert time.monotonic() - down >= window
        line = run.last_line()
        assert line.startswith(f"runners.cotrain: the tracking server {server.uri} did not "
                               "answer while "), line
        assert "(connection refused) through MLflow's retries (about 62 s" in line
        command = re.search(r"continue with: python -m runners\.cotrain (resume=(\w+) "
                            r"checkpoint_dir=\S+)", line)
        assert command, line
        run_id = command.group(2)
        server.process.start()
        resume = Command(command.group(1).split(), server.uri, ALICE, tmp_path)
        assert resume.finish() == 0, resume.output[-3000:]
        assert_same_training(final_state(run_id, f"{tmp_path}/long"),
                             final_state(ref_id, ref_ck))
        assert metric_histories(server.uri, run_id) == metric_histories(ref_uri, ref_id)
        assert client.get_run(run_id).info.status == "FINISHED"
