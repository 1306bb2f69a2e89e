"""A tracking server that refuses a login or a permission, or does not answer: every command
says so in one line naming the cause and the fix, exit status 2, no traceback
(runners/tracking_errors.py, runners/cli.py). A small HTTP server on loopback stands in for
MLflow's basic-auth app (same status codes and bodies); the real one is checked in
test_team_server.py."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
from mlflow import MlflowClient

from learned_at.runners import compare, cotrain, evaluate, inspect
from learned_at.runners.tracking_errors import (TrackingAuthError, TrackingPermissionError,
                                                TrackingUnavailableError, retry_seconds,
                                                tracking_access_error)
from tests.helpers import one_line, run_command
from tests.runners.tracking_server import free_port

#: MLflow's basic-auth app answers a missing or wrong login with this (HTTP 401)
NOT_AUTHENTICATED = (b"You are not authenticated. Please see https://www.mlflow.org/docs/latest/"
                     b"auth/index.html#authenticating-to-mlflow on how to authenticate.")


def _refusing_server(status: int, body: bytes) -> Iterator[str]:
    class Refuse(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def login_refused() -> Iterator[str]:
    yield from _refusing_server(401, NOT_AUTHENTICATED)


@pytest.fixture
def permission_denied() -> Iterator[str]:
    yield from _refusing_server(403, b"Permission denied")


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials
    monkeypatch.chdir(tmp_path)


def test_mlflow_retry_time_from_its_settings():
    assert retry_seconds({}) == 244  # 0 + 4 + 8 + 16 + 32 + 64 + 120 (capped): about 4 min
    assert retry_seconds({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
                          "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}) == 14


def test_anonymous_and_wrong_login_are_told_apart(login_refused, no_credentials, monkeypatch):
    client = MlflowClient(login_refused)
    with pytest.raises(Exception) as refused:
        client.get_experiment_by_name("x")
    error = tracking_access_error(refused.value, login_refused)
    assert isinstance(error, TrackingAuthError)
    assert str(error) == (f"the tracking server {login_refused} asks for a login (HTTP 401) and "
                          "none was given; set MLFLOW_TRACKING_USERNAME and "
                          "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN, or the [mlflow] "
                          "section of ~/.mlflow/credentials)")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    with pytest.raises(Exception) as refused:
        client.get_experiment_by_name("x")
    error = tracking_access_error(refused.value, login_refused, "reading run 42")
    assert str(error).startswith(f"the tracking server {login_refused} refused the login of user "
                                 "'bob' while reading run 42 (HTTP 401: wrong password or unknown "
                                 "user); check MLFLOW_TRACKING_USERNAME")


def test_every_command_says_a_refused_login_inone_line(login_refused, no_credentials,
                                                        monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", login_refused)
    commands = [(cotrain.main, ["epochs=1", "progress=false"], "runners.cotrain"),
                (cotrain.main, ["resume=0123abcd", "checkpoint_dir=ck"], "runners.cotrain"),
                (evaluate.main, ["run_id=0123abcd", "progress=false"], "runners.evaluate"),
                (inspect.main, ["run_id=0123abcd"], "runners.inspect"),
                (compare.main, ["experiment=learned-at", "log=false"], "runners.compare")]
    for main, argv, prog in commands:
        assert run_command(main, argv) == 2, argv
        line = one_line(capsys, prog)
        assert f"the tracking server {login_refused} asks for a login (HTTP 401)" in line, line
        assert "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in line


def test_a_missing_permission_is_one_line_naming_the_fix(permission_denied, monkeypatch, capsys,
                                                         tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", permission_denied)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
    assert run_command(cotrain.main, ["epochs=1", "progress=false"]) == 2
    line = one_line(capsys, "runners.cotrain")
    assert line.startswith(f"runners.cotrain: the tracking server {permission_denied} denied user "
                           "'bob' permission while writing to experiment 'learned-at' (HTTP 403); "
                           "ask the experiment's owner or an admin to grant EDIT on it"), line
    with pytest.raises(Exception) as refused:
        MlflowClient(permission_denied).set_tag("0123abcd", "k", "v")
    error = tracking_access_error(refused.value, permission_denied)
    assert isinstance(error, TrackingPermissionError)
    assert "permission for /api/2.0/mlflow/runs/set-tag (HTTP 403);" in str(error)


def test_a_server_that_does_not_answer_isone_line(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    with pytest.raises(Exception) as failed:
        MlflowClient(uri).get_run("0123abcd")
    assert isinstance(tracking_access_error(failed.value, uri), TrackingUnavailableError)
    for main, argv, prog in [(cotrain.main, ["epochs=1", "progress=false"], "runners.cotrain"),
                             (compare.main, ["run_ids=[0123abcd]", "log=false"],
                              "runners.compare")]:
        assert run_command(main, argv) == 2
        line = one_line(capsys, prog)
        doing = ("writing to experiment 'learned-at'" if prog.endswith("cotrain")
                 else "reading run 0123abcd")
        assert line == (f"{prog}: the tracking server {uri} did not answer while {doing} "
                        "(connection refused) through MLflow's retries (about 0 s: "
                        "MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR); "
                        "check that it runs and that MLFLOW_TRACKING_URI names it"), line
