"""Who writes a run: the :class:`Holder` of its lock and lease, and the errors when another
process is (or became) the writer.

A holder is named by its host, process id and the time it took the run, and identified by a
random token. ``machine`` (the kernel's boot id and the process-id namespace) says whether two
holders share a process table: only then can one tell that the other's process has ended
(:meth:`Holder.gone`), and a dead holder's lease is taken over at once instead of after its
expiry.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Holder", "WriterBusyError", "WriterLostError", "utc_text"]


class WriterBusyError(ValueError):
    """Another live process writes the run (a usage error: one line, exit status 2)."""


class WriterLostError(RuntimeError):
    """This process's lease was taken over (it had expired): it stops without writing."""


def utc_text(seconds: float) -> str:
    """``2026-12-04 21:04:05 UTC``."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _machine() -> str:
    """The boot id and pid namespace: equal for processes that see the same process table."""
    parts = []
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(open(path).read().strip() if "boot_id" in path
                         else str(os.stat(path).st_ino))
        except OSError:
            parts.append("?")
    return ":".join(parts)


def _started(pid: int) -> float:
    """When process ``pid`` started (seconds since the epoch), 0.0 if it does not exist."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return 0.0


@dataclass(frozen=True)
class Holder:
    """A process that writes a run.

    Attributes:
        host: its host name.
        pid: its process id.
        started: when its process started (tells a reused pid apart).
        since: when it took the run.
        token: random; tells two holders apart.
        machine: boot id and pid namespace (see the module docstring).
    """

    host: str
    pid: int
    started: float
    since: float
    token: str
    machine: str = ""

    @classmethod
    def this_process(cls, now: float | None = None) -> Holder:
        """This process, taking the run now."""
        pid = os.getpid()
        return cls(socket.gethostname(), pid, _started(pid),
                   time.time() if now is None else now, uuid.uuid4().hex, _machine())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Holder:
        """The inverse of :meth:`to_dict` (unknown keys ignored)."""
        return cls(str(data.get("host", "?")), int(data.get("pid", 0)),
                   float(data.get("started", 0.0)), float(data.get("since", 0.0)),
                   str(data.get("token", "")), str(data.get("machine", "")))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)

    def describe(self) -> str:
        """``host node12, process 4711 (since 2026-12-04 21:04:05 UTC)``."""
        return f"host {self.host}, process {self.pid} (since {utc_text(self.since)})"

    def gone(self) -> bool:
        """Its process has certainly ended: it shared this machine's process table and no
        process with its id and start time exists. False when that cannot be known."""
        if not self.machine or "?" in self.machine or self.machine != _machine():
            return False
        started = _started(self.pid)
        return started == 0.0 or abs(started - self.started) > 1.0
