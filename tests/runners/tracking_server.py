"""A throw-away PostgreSQL cluster and an MLflow tracking server on loopback, for tests.

``postgres_cluster()`` runs ``initdb`` into a temporary folder and ``pg_ctl start`` on a free
port (trust authentication, loopback only, the socket in the same folder); as root — CI runs
as root — the server refuses to run, so both commands run as the ``postgres`` system user
(created by Debian's packages) through ``runuser``. ``mlflow_server()`` starts
``mlflow server --backend-store-uri postgresql://... --artifacts-destination <folder>
--workers 1`` (one worker: ≈ 5 ms per request against ≈ 48 ms with the default four,
docs/references.md §9.2) and waits for ``/health``. Both stop what they started on exit, also
when the test fails.
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


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (uvicorn and its workers), SIGKILL if it lingers
    (a graceful uvicorn shutdown waits for clients' kept-alive connections)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@contextlib.contextmanager
def mlflow_server(backend_uri: str, folder: Path, timeout: float = 240.0) -> Iterator[Server]:
    """``mlflow server`` on a free loopback port with a local artifact destination."""
    port = free_port()
    artifacts, log = folder / "artifacts", folder / "mlflow-server.log"
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
           "--artifacts-destination", artifacts.as_uri(), "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, process, log, timeout)
        yield Server(url, artifacts, log)
    finally:
        _stop(process)
