"""One writer per run: the lock on this machine and the lease on the run, held while a process
trains it, renewed on a timer.

:func:`claim_run` is what a co-training does before any work on a run — a new one right after
creating it, a resume before loading its checkpoint: it takes the lock beside the checkpoint
(runners/run_lock.py: a second process on this machine is refused at once) and the lease
recorded on the run (runners/run_lease.py: a process on another machine is refused until the
lease is released or expires). A refusal is :class:`WriterBusyError`: one line naming the
holder, exit status 2.

While held, a daemon thread renews the lease every ``ttl_s / 5`` seconds (a few small requests
a minute at the default, none on the training path: no host sync, no wait). A renewal that the
server does not answer is retried at the next tick (the lease lasts ``ttl_s``, five ticks); one
that finds the lease taken over records :class:`WriterLostError`, which :meth:`RunWriter.check`
raises where the training loop writes (each checkpoint, each epoch's log): the process stops
without writing.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from learned_at.runners.run_lease import LeaseStore, MlflowLeaseStore, RunLease
from learned_at.runners.run_lock import RunLock
from learned_at.runners.writer_identity import Holder, WriterBusyError, WriterLostError

__all__ = ["RENEWALS_PER_LEASE", "RunWriter", "WriterBusyError", "WriterLostError", "claim_run"]

RENEWALS_PER_LEASE = 5
"""The lease is renewed this many times per ``ttl_s``."""

_log = logging.getLogger(__name__)


class RunWriter:
    """This process's lock and lease on one run (use :func:`claim_run`).

    Args:
        lock: the machine-local lock.
        lease: the lease on the run.
    """

    def __init__(self, lock: RunLock, lease: RunLease) -> None:
        self.lock, self.lease = lock, lease
        self.lost: WriterLostError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def run_id(self) -> str:
        return self.lease.run_id

    def acquire(self) -> RunWriter:
        """Take the lock, then the lease; start renewing. Raises :class:`WriterBusyError`."""
        self.lock.acquire()
        try:
            self.lease.acquire()
        except BaseException:
            self.lock.release()
            raise
        self._thread = threading.Thread(target=self._renew_loop, daemon=True,
                                        name=f"lease-{self.run_id[:8]}")
        self._thread.start()
        return self

    def set_ttl(self, ttl_s: float) -> None:
        """Renew for ``ttl_s`` from the next renewal on (the run's own setting, once known)."""
        self.lease.ttl_s = ttl_s

    def check(self) -> None:
        """Raise :class:`WriterLostError` when the lease was taken over."""
        if self.lost is not None:
            raise self.lost

    def renew_now(self) -> None:
        """One renewal on the calling thread (what the timer does)."""
        try:
            self.lease.renew()
        except WriterLostError as error:
            self.lost = error

    def release(self, tell_server: bool = True) -> None:
        """Stop renewing, mark the lease released (a failure is logged; ``tell_server=False``:
        not at all, the server being down), drop the lock. Only the first call acts."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            if self.lost is None and tell_server:
                self.lease.release()
        except Exception as error:  # the lease then ends at its expiry
            _log.warning("could not release the lease of run %s: %s", self.run_id,
                         " ".join(str(error).split()))
        finally:
            self.lock.release()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease.ttl_s / RENEWALS_PER_LEASE):
            try:
                self.renew_now()
            except Exception as error:  # unanswered: again at the next tick
                _log.warning("renewing the lease of run %s failed: %s", self.run_id,
                             " ".join(str(error).split()))
            if self.lost is not None:
                _log.error("%s", self.lost)
                return


def claim_run(run_id: str, checkpoint_dir: str | Path, tracking_uri: str | None, ttl_s: float,
              store: LeaseStore | None = None) -> RunWriter:
    """Take the writer lock and lease of ``run_id`` (module docstring).

    Args:
        run_id: the run.
        checkpoint_dir: the checkpoint folder (the lock is ``<checkpoint_dir>/<run id>/``).
        tracking_uri: the tracking store that holds the run.
        ttl_s: the lease's length.
        store: where the lease lives (default: the tracking store).

    Raises:
        WriterBusyError: another live process writes the run.
    """
    holder = Holder.this_process()
    lock = RunLock(Path(checkpoint_dir) / run_id, run_id, holder)
    lease = RunLease(store or MlflowLeaseStore(tracking_uri), run_id, holder, ttl_s)
    return RunWriter(lock, lease).acquire()
