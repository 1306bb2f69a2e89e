"""A throw-away PostgreSQL cluster and an MLflow tracking server on loopback, for tests.

``postgres_cluster()`` runs ``initdb`` into a temporary folder and ``pg_ctl start`` on a free
port (trust authentication, loopback only, the socket in the same folder); as root — CI runs
as root — the server refuses to run, so both commands run as the ``postgres`` system user
(created by Debian's packages) through ``runuser``. ``mlflow_server()`` starts
``mlflow server --backend-store-uri postgresql://... --artifacts-destination <folder>
--workers 1`` (one worker: ≈ 5 ms per request against ≈ 48 ms with the default four,
docs/references.md §9.2) and waits for ``/health``. Both stop what they started on exit, also
when the test fails.

With ``auth=`` the server runs MLflow's ``basic-auth`` app as the README's team recipe does:
an auth config (users and permissions in the same database, ``default_permission = READ``),
the admin's password and the Flask secret key in its environment. :func:`add_user` and
:func:`grant` are the admin's REST calls; :class:`ServerProcess` can be killed and started again
on the same port (a tracking outage).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_USER = "postgres"


def find_pg_binary(name: str) -> str | None:
    """``name`` (initdb, pg_ctl) on PATH, else in Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return candidates[-1] if candidates else None


def postgres_missing() -> str | None:
    """Why a throw-away cluster cannot be started here, or None when it can."""
    if find_pg_binary("initdb") is None or find_pg_binary("pg_ctl") is None:
        return "PostgreSQL is not installed (initdb/pg_ctl not found)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            return f"running as root and there is no {PG_USER!r} user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing"
    return None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_pg_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass(frozen=True)
class Cluster:
    """A running cluster: its folder and port; ``uri`` is the SQLAlchemy URI MLflow takes."""

    folder: Path
    port: int

    @property
    def uri(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/postgres"


@contextlib.contextmanager
def postgres_cluster() -> Iterator[Cluster]:
    """initdb + pg_ctl start on a free loopback port; pg_ctl stop and delete on exit."""
    folder = Path(tempfile.mkdtemp(prefix="learned-at-pg-"))
    data, log = folder / "data", folder / "server.log"
    if os.geteuid() == 0:
        user = pwd.getpwnam(PG_USER)
        os.chown(folder, user.pw_uid, user.pw_gid)
    port = free_port()
    started = False
    try:
        subprocess.run(_as_pg_user([find_pg_binary("initdb"), "-D", str(data), "-U", PG_USER,
                                    "--auth=trust", "-E", "UTF8", "--no-sync"]),
                       check=True, capture_output=True, text=True, timeout=180, cwd=folder)
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        started = True
        subprocess.run(_as_pg_user([find_pg_binary("pg_ctl"), "-D", str(data), "-l", str(log),
                                    "-o", options, "-w", "-t", "120", "start"]),
                       check=True, capture_output=True, text=True, timeout=180, cwd=folder)
        yield Cluster(folder, port)
    except subprocess.CalledProcessError as error:
        text = log.read_text() if log.exists() else ""
        raise RuntimeError(f"{error.cmd} failed: {error.stderr}\n{text}") from error
    finally:
        if started:
            subprocess.run(_as_pg_user([find_pg_binary("pg_ctl"), "-D", str(data), "-m",
                                        "immediate", "-w", "stop"]),
                           capture_output=True, timeout=120, cwd=folder)
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class Server:
    """A running MLflow server; ``uri`` is what ``MLFLOW_TRACKING_URI`` takes."""

    uri: str
    artifacts: Path
    log: Path
    process: ServerProcess | None = None


@dataclass(frozen=True)
class Auth:
    """MLflow basic-auth settings of a test server: the admin's login."""

    admin: str = "admin"
    password: str = "admin-password-0"

    def env(self, folder: Path, database_uri: str) -> dict[str, str]:
        """The server's environment: its auth config file, admin password and secret key."""
        config = folder / "basic_auth.ini"
        config.write_text("[mlflow]\ndefault_permission = READ\n"
                          f"database_uri = {database_uri}\nadmin_username = {self.admin}\n"
                          "authorization_function = "
                          "mlflow.server.auth:authenticate_request_basic_auth\n")
        return {"MLFLOW_AUTH_CONFIG_PATH": str(config),
                "MLFLOW_AUTH_ADMIN_PASSWORD": self.password,
                "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret-key-0"}


def _wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}:\n"
                               f"{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server not healthy after {timeout:.0f} s:\n"
                       f"{log.read_text()[-4000:]}")


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """``sig`` to the server's process group (uvicorn and its workers), SIGKILL if it lingers
    (a graceful uvicorn shutdown waits for clients' kept-alive connections)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


class ServerProcess:
    """``mlflow server`` on one loopback port, started (again) by :meth:`start`, killed by
    :meth:`kill` (SIGKILL to its process group: an outage, not a shutdown)."""

    def __init__(self, cmd: list[str], url: str, log: Path, env: dict[str, str],
                 timeout: float) -> None:
        self.cmd, self.url, self.log, self.env, self.timeout = cmd, url, log, env, timeout
        self.process: subprocess.Popen | None = None

    def start(self) -> float:
        """Start and wait for ``/health``; returns the seconds that took."""
        began = time.monotonic()
        with open(self.log, "a") as out:
            self.process = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True,
                                            env={**os.environ, **self.env})
        _wait_healthy(self.url, self.process, self.log, self.timeout)
        return time.monotonic() - began

    def kill(self) -> None:
        if self.process is not None:
            _stop(self.process, signal.SIGKILL)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)


@contextlib.contextmanager
def mlflow_server(backend_uri: str, folder: Path, timeout: float = 240.0,
                  auth: Auth | None = None) -> Iterator[Server]:
    """``mlflow server`` on a free loopback port with a local artifact destination (with
    ``auth``: MLflow's basic-auth app, its users in the backend database)."""
    port = free_port()
    artifacts, log = folder / "artifacts", folder / "mlflow-server.log"
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
           "--artifacts-destination", artifacts.as_uri(), "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]
    env = {}
    if auth is not None:
        cmd += ["--app-name", "basic-auth"]
        env = auth.env(folder, backend_uri)
    url = f"http://127.0.0.1:{port}"
    process = ServerProcess(cmd, url, log, env, timeout)
    try:
        process.start()
        yield Server(url, artifacts, log, process)
    finally:
        process.stop()


def add_user(server: Server, auth: Auth, username: str, password: str) -> None:
    """The admin creates a user (MLflow basic-auth's REST API)."""
    _admin_call(server, auth, "/api/2.0/mlflow/users/create",
                {"username": username, "password": password})


def grant(server: Server, login: tuple[str, str], username: str, experiment_id: str,
          permission: str) -> None:
    """``login`` (an admin, or the experiment's owner) grants ``username`` ``permission``
    (READ, EDIT, MANAGE, NO_PERMISSIONS) on an experiment."""
    _call(server, login, "/api/3.0/mlflow/users/permissions/grant",
          {"username": username, "resource_type": "experiment", "resource_id": experiment_id,
           "permission": permission})


def _admin_call(server: Server, auth: Auth, path: str, body: dict) -> None:
    _call(server, (auth.admin, auth.password), path, body)


def _call(server: Server, login: tuple[str, str], path: str, body: dict) -> None:
    import requests

    response = requests.post(f"{server.uri}{path}", json=body, auth=login, timeout=60)
    response.raise_for_status()
