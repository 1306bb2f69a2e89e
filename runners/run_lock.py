"""The lock beside a run's checkpoint: one process per machine continues a run.

``<checkpoint_dir>/<run id>/writer.lock`` is locked with ``flock`` (exclusive, non-blocking)
by the process that writes the run and holds its holder's description (host, process, since
when) as one JSON line. The kernel drops the lock when the process ends, also on ``kill -9``,
so a stale file never blocks anyone; the holder deletes the file (and the folder, when nothing
else is in it) when it lets go. A process
that opened the file just before it was deleted would lock a file nobody else sees: after
locking, the path is checked to still name the locked file, else the lock is taken again.

Where ``fcntl`` does not exist (Windows) the lock is not taken and the lease recorded on the
run (runners/run_lease.py) is the only guard.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

from learned_at.runners.writer_identity import Holder, WriterBusyError

__all__ = ["LOCK_NAME", "RunLock"]

LOCK_NAME = "writer.lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class RunLock:
    """The machine-local writer lock of one run (``acquire`` / ``release``).

    Args:
        folder: the run's checkpoint folder (``<checkpoint_dir>/<run id>``).
        run_id: the run, for messages.
        holder: this process, as written into the file.
    """

    def __init__(self, folder: str | os.PathLike, run_id: str, holder: Holder) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.run_id, self.holder = run_id, holder
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        """This object holds the lock."""
        return self._file is not None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`WriterBusyError` naming the process that has it."""
        if fcntl is None or self._file is not None:
            return
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                handle = open(self.path, "a+", encoding="utf-8")
            except FileNotFoundError:  # the folder was just removed by the last holder
                continue
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                raise WriterBusyError(self._busy_message()) from None
            if self._names(handle):
                break
            handle.close()  # deleted (or replaced) by its last holder meanwhile: again
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(self.holder.to_dict()) + "\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        """Delete the file and let go of the lock (nothing when not held)."""
        if self._file is None:
            return
        handle, self._file = self._file, None
        try:
            if self._names(handle):
                self.path.unlink()
                self.path.parent.rmdir()  # only when empty: a run that never wrote a checkpoint
        except OSError:
            pass
        finally:
            handle.close()  # closing drops the flock

    def _names(self, handle: IO[str]) -> bool:
        """The path still names the file behind ``handle``."""
        try:
            here, there = os.fstat(handle.fileno()), os.stat(self.path)
        except OSError:
            return False
        return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)

    def _busy_message(self) -> str:
        other = _read_holder(self.path)
        who = Holder.from_dict(other).describe() if other else "another process"
        return (f"run {self.run_id} is already being written on this machine by {who} "
                f"(lock {self.path}); a second writer would interleave two histories in one "
                "run: wait for that process to end (or stop it), then resume")


def _read_holder(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return None
