"""The lease recorded on a run: one writer per run across machines that share only the
tracking server.

MLflow has no compare-and-swap on tags, but a param cannot change once logged: logging
``lease.<n>`` with another value than the one there fails, on every store (a primary key in
the SQL stores, so also between two clients of one server). So the writer of generation ``n``
is whoever logged the param ``lease.<n>`` first, with its :class:`LeaseRecord` (holder,
expiry) as the value; the tag ``lease`` holds the current generation's record as it is renewed.
The current lease is the one of the highest generation; the tag counts only when it belongs
to that generation and holder.

* :meth:`RunLease.acquire` takes generation n + 1 when generation n is released, expired, or
  held by a process that certainly ended (same machine, its process gone:
  :meth:`Holder.gone`); otherwise it raises :class:`WriterBusyError` naming the holder, when it
  took the run, and when its lease expires. Two processes that race for generation n + 1:
  one logs the param, the other's log fails and it reports the winner.
* :meth:`RunLease.renew` extends the expiry (the tag). A holder that finds a later generation
  logged was taken over (its lease had expired) and must stop (:class:`WriterLostError`); one
  that renews after its own expiry claims the next generation like any newcomer, so a stalled
  holder and a newcomer can never both go on.
* :meth:`RunLease.release` marks the lease released: the next writer needs no wait.

The params ``lease.1``, ``lease.2``, ... stay on the run: who continued it, from where, since
when. Expiry compares this machine's clock with the holder's: clocks are assumed to agree to
well within the lease (NTP). Times come from ``clock`` (tests pass a fake one).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from learned_at.runners.writer_identity import (Holder, WriterBusyError, WriterLostError,
                                                utc_text)

__all__ = ["LEASE_PARAM", "LEASE_TAG", "LeaseRecord", "LeaseStore", "MlflowLeaseStore",
           "RunLease", "current_lease"]

LEASE_TAG = "lease"
LEASE_PARAM = "lease."
"""Prefix of the generation params ``lease.<n>``."""


@dataclass(frozen=True)
class LeaseRecord:
    """One generation of a run's lease.

    Attributes:
        holder: the writer.
        generation: 1 for the first writer of the run, +1 for each that took over.
        expires: when it ends unless renewed (seconds since the epoch).
        renewed: when it was last renewed.
        released: its holder let go.
    """

    holder: Holder
    generation: int
    expires: float
    renewed: float
    released: bool = False

    def to_json(self) -> str:
        return json.dumps({"holder": self.holder.to_dict(), "generation": self.generation,
                           "expires": self.expires, "renewed": self.renewed,
                           "released": self.released}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> LeaseRecord | None:
        """The record in ``text``; None when it is missing or not a record."""
        try:
            data = json.loads(text or "")
            return cls(Holder.from_dict(data["holder"]), int(data["generation"]),
                       float(data["expires"]), float(data["renewed"]),
                       bool(data.get("released", False)))
        except (ValueError, KeyError, TypeError):
            return None

    def free(self, now: float) -> bool:
        """Another process may take the run now."""
        return self.released or self.expires <= now or self.holder.gone()

    def describe(self, now: float) -> str:
        """The holder, when it took the run and when its lease ends, in words."""
        left = self.expires - now
        return (f"{self.holder.describe()}; its lease was renewed at "
                f"{utc_text(self.renewed)} and expires at {utc_text(self.expires)}"
                + (f", in {left:.0f} s" if left > 0 else ""))


def current_lease(params: Mapping[str, str], tags: Mapping[str, str]) -> LeaseRecord | None:
    """The lease of the highest generation among ``params`` (renewed by the tag), or None."""
    generations = [int(key[len(LEASE_PARAM):]) for key in params
                   if key.startswith(LEASE_PARAM) and key[len(LEASE_PARAM):].isdigit()]
    if not generations:
        return None
    latest = max(generations)
    record = LeaseRecord.from_json(params[f"{LEASE_PARAM}{latest}"])
    if record is None:  # not a record (written by hand?): an expired lease of that generation
        return LeaseRecord(Holder("?", 0, 0.0, 0.0, ""), latest, 0.0, 0.0)
    tagged = LeaseRecord.from_json(tags.get(LEASE_TAG))
    if (tagged is not None and tagged.generation == latest
            and tagged.holder.token == record.holder.token):
        return tagged
    return record


class LeaseStore(Protocol):
    """Where a run's lease lives (MLflow: :class:`MlflowLeaseStore`; tests: a dict)."""

    def read(self, run_id: str) -> tuple[Mapping[str, str], Mapping[str, str]]:
        """The run's params and tags."""
        ...

    def claim(self, run_id: str, key: str, value: str) -> bool:
        """Log param ``key`` = ``value`` unless it exists with another value (then False)."""
        ...

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        """Set a run tag."""
        ...


class MlflowLeaseStore:
    """A :class:`LeaseStore` on an MLflow tracking store (a refused or unanswered request
    raises :class:`~runners.tracking_errors.TrackingAccessError`)."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri)
        self.uri = self.client.tracking_uri

    def read(self, run_id: str) -> tuple[Mapping[str, str], Mapping[str, str]]:
        from learned_at.runners.run_store import get_run

        data = get_run(self.client, run_id).data
        return data.params, data.tags

    def claim(self, run_id: str, key: str, value: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            with self._explained(f"claiming run {run_id}"):
                self.client.log_param(run_id, key, value)
            return True
        except MlflowException as error:
            if error.error_code == "INVALID_PARAMETER_VALUE":  # logged with another value
                return False
            raise

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        with self._explained(f"recording the lease of run {run_id}"):
            self.client.set_tag(run_id, key, value)

    def _explained(self, doing: str) -> Any:
        from learned_at.runners.tracking_errors import explained_requests

        return explained_requests(self.uri, doing)


class RunLease:
    """This process's lease on one run (module docstring).

    Args:
        store: where the lease lives.
        run_id: the run.
        holder: this process.
        ttl_s: how long a lease lasts without renewal.
        clock: seconds since the epoch (``time.time``).
    """

    def __init__(self, store: LeaseStore, run_id: str, holder: Holder, ttl_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.run_id, self.holder = store, run_id, holder
        self.ttl_s, self.clock = ttl_s, clock
        self.record: LeaseRecord | None = None

    def acquire(self) -> LeaseRecord:
        """Take the run's lease (module docstring), or raise :class:`WriterBusyError`."""
        now = self.clock()
        current = current_lease(*self.store.read(self.run_id))
        if current is not None and current.holder.token == self.holder.token:
            self.record = current
            return current
        if current is not None and not current.free(now):
            raise WriterBusyError(self._busy(current, now))
        return self._claim((current.generation if current else 0) + 1, now)

    def renew(self) -> LeaseRecord:
        """Extend the lease; :class:`WriterLostError` when another process took it over."""
        if self.record is None:
            raise RuntimeError("renew() before acquire()")
        now = self.clock()
        current = current_lease(*self.store.read(self.run_id))
        if current is None or current.holder.token != self.holder.token:
            raise self._lost(current, now)
        if now >= self.record.expires:  # late: claim the next generation like a newcomer
            try:
                return self._claim(current.generation + 1, now)
            except WriterBusyError:
                raise self._lost(current_lease(*self.store.read(self.run_id)), now) from None
        record = replace(self.record, expires=now + self.ttl_s, renewed=now)
        self.store.set_tag(self.run_id, LEASE_TAG, record.to_json())
        self.record = record
        return record

    def release(self) -> None:
        """Mark the lease released (when this process still holds it)."""
        if self.record is None:
            return
        now = self.clock()
        current = current_lease(*self.store.read(self.run_id))
        if current is not None and current.holder.token == self.holder.token:
            record = replace(self.record, expires=now, renewed=now, released=True)
            self.store.set_tag(self.run_id, LEASE_TAG, record.to_json())
        self.record = None

    def _claim(self, generation: int, now: float) -> LeaseRecord:
        record = LeaseRecord(self.holder, generation, now + self.ttl_s, now)
        if not self.store.claim(self.run_id, f"{LEASE_PARAM}{generation}", record.to_json()):
            winner = current_lease(*self.store.read(self.run_id))
            raise WriterBusyError(self._busy(winner, now))
        self.store.set_tag(self.run_id, LEASE_TAG, record.to_json())
        self.record = record
        return record

    def _busy(self, current: LeaseRecord | None, now: float) -> str:
        who = current.describe(now) if current else "another process"
        return (f"run {self.run_id} is already being written by {who}; a second writer would "
                "interleave two histories in one run: wait for it to end, or, if that process "
                "is gone (kill -9, a lost node), retry after its lease expires")

    def _lost(self, current: LeaseRecord | None, now: float) -> WriterLostError:
        who = current.holder.describe() if current else "another process"
        mine = self.record.expires if self.record else now
        return WriterLostError(
            f"run {self.run_id} was taken over by {who} after this process's lease expired "
            f"at {utc_text(mine)} (not renewed in time: the tracking server unreachable, or "
            "this process stalled); this process stops without writing")
