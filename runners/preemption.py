"""Stopping a run cleanly on SIGTERM and SIGINT (preemption, Ctrl-C).

A cluster preempts a job with SIGTERM (and SIGKILL after a grace period); Ctrl-C sends SIGINT.
:class:`StopSignals` turns both into a *request* that the co-training loop honours at a safe
point: after the batch in flight (the optimiser step is never cut in half), when it writes a
checkpoint at that batch and ends the run as ``KILLED``. Code that changes no training state
(the per-epoch evaluation, the final evaluation) runs :meth:`StopSignals.interruptible`: a
signal there stops it at once. A second SIGINT while a request is pending raises
``KeyboardInterrupt`` immediately (an impatient user). Handlers are installed only in the main
thread (elsewhere Python forbids it; the run then just cannot be stopped this way) and the
previous handlers are restored on exit.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType

__all__ = ["RunInterrupted", "StopSignals"]

_log = logging.getLogger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunInterrupted(Exception):
    """The run stopped on a signal (its checkpoint is written before this is raised).

    Attributes:
        signum: the signal number.
        exit_code: the conventional exit status, 128 + signum (143 for SIGTERM).
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


class StopSignals:
    """SIGTERM / SIGINT handlers that record a stop request (a context manager)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._immediate = False
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """A stop signal has arrived."""
        return self.signum is not None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.signum = signum
        _log.warning("%s received: stopping at the next safe point with a checkpoint",
                     signal.Signals(signum).name)
        if self._immediate:
            raise RunInterrupted(signum)

    def check(self) -> None:
        """Raise :class:`RunInterrupted` if a stop was requested."""
        if self.signum is not None:
            raise RunInterrupted(self.signum)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Within the block a stop signal raises :class:`RunInterrupted` at once (also one
        that arrived before the block)."""
        self.check()
        self._immediate = True
        try:
            yield
        finally:
            self._immediate = False
