"""The lease recorded on a run (runners/run_lease.py), on a fake store with a fake clock, and
its compare-and-swap on a real MLflow store: one writer per run, a holder's death or expiry
lets the next one in, a stalled holder finds out it was taken over."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from mlflow import MlflowClient

from learned_at.runners.run_lease import (LEASE_TAG, LeaseRecord, MlflowLeaseStore, RunLease,
                                          current_lease)
from learned_at.runners.writer_identity import Holder, WriterBusyError, WriterLostError

RUN = "r1"
TTL = 300.0


class FakeStore:
    """Params (write-once) and tags of runs in dicts; ``before_claim`` runs inside claim (to
    let another process act between a read and a claim)."""

    def __init__(self) -> None:
        self.params: dict[str, dict[str, str]] = {}
        self.tags: dict[str, dict[str, str]] = {}
        self.before_claim = None

    def read(self, run_id):
        return dict(self.params.get(run_id, {})), dict(self.tags.get(run_id, {}))

    def claim(self, run_id, key, value):
        if self.before_claim is not None:
            hook, self.before_claim = self.before_claim, None
            hook()
        params = self.params.setdefault(run_id, {})
        if key in params and params[key] != value:
            return False
        params[key] = value
        return True

    def set_tag(self, run_id, key, value):
        self.tags.setdefault(run_id, {})[key] = value


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def elsewhere(name: str, since: float = 1_000_000.0) -> Holder:
    """A holder on another machine (its death cannot be seen from here)."""
    return Holder(name, 4711, 1.0, since, f"token-{name}", "other-boot:1")


def lease(store, holder, clock) -> RunLease:
    return RunLease(store, RUN, holder, TTL, clock)


def test_the_first_writer_takes_generation_one_and_records_it():
    store, clock = FakeStore(), Clock()
    record = lease(store, elsewhere("a"), clock).acquire()
    assert record.generation == 1 and record.expires == clock.now + TTL
    assert LeaseRecord.from_json(store.params[RUN]["lease.1"]) == record
    assert current_lease(*store.read(RUN)) == record


def test_a_live_holder_refuses_a_second_writer_naming_host_process_and_times():
    store, clock = FakeStore(), Clock()
    lease(store, elsewhere("node12"), clock).acquire()
    clock.now += 120
    with pytest.raises(WriterBusyError) as refused:
        lease(store, elsewhere("node7"), clock).acquire()
    message = str(refused.value)
    assert "\n" not in message
    assert f"run {RUN} is already being written by host node12, process 4711" in message
    assert "since 1970-01-12 13:46:40 UTC" in message
    assert "expires at 1970-01-12 13:51:40 UTC, in 180 s" in message
    assert "retry after its lease expires" in message
    assert set(store.params[RUN]) == {"lease.1"}  # nothing was written


def test_an_expired_lease_is_taken_over_and_its_holder_finds_out_at_its_renewal():
    store, clock = FakeStore(), Clock()
    first = lease(store, elsewhere("a"), clock)
    first.acquire()
    clock.now += TTL + 1  # a lost node: no renewal for a whole lease
    second = lease(store, elsewhere("b"), clock)
    assert second.acquire().generation == 2
    with pytest.raises(WriterLostError, match="taken over by host b, process 4711"):
        first.renew()
    assert current_lease(*store.read(RUN)).holder.host == "b"


def test_renewal_extends_the_lease_and_keeps_others_out():
    store, clock = FakeStore(), Clock()
    holder = lease(store, elsewhere("a"), clock)
    holder.acquire()
    for _ in range(4):  # renewed every TTL / 5 for a while
        clock.now += TTL / 5
        holder.renew()
    clock.now += TTL / 2  # well past the first expiry
    with pytest.raises(WriterBusyError):
        lease(store, elsewhere("b"), clock).acquire()
    assert current_lease(*store.read(RUN)).renewed == clock.now - TTL / 2


def test_a_released_lease_is_free_at_once():
    store, clock = FakeStore(), Clock()
    holder = lease(store, elsewhere("a"), clock)
    holder.acquire()
    holder.release()
    assert current_lease(*store.read(RUN)).released
    assert lease(store, elsewhere("b"), clock).acquire().generation == 2


def test_a_holder_that_died_on_this_machine_is_taken_over_without_waiting():
    store, clock = FakeStore(), Clock()
    me = Holder.this_process(clock.now)
    dead = replace(me, pid=_unused_pid(), token="dead")  # kill -9: same machine, no process
    lease(store, dead, clock).acquire()
    assert lease(store, me, clock).acquire().generation == 2
    alive = replace(me, token="alive")  # this very process: alive, so not taken
    with pytest.raises(WriterBusyError):
        lease(store, alive, clock).acquire()


def test_a_holder_on_another_machine_is_never_presumed_dead():
    assert not elsewhere("a").gone()
    assert not replace(Holder.this_process(), machine="").gone()


def test_two_writers_racing_for_the_same_generation_have_one_winner():
    store, clock = FakeStore(), Clock()
    a, b = lease(store, elsewhere("a"), clock), lease(store, elsewhere("b"), clock)
    # both read "free"; b claims generation 1 between a's read and a's claim
    store.before_claim = b.acquire
    with pytest.raises(WriterBusyError, match="already being written by host b"):
        a.acquire()
    assert a.record is None and b.record is not None
    assert current_lease(*store.read(RUN)).holder.host == "b"


def test_a_late_renewal_claims_the_next_generation_when_nobody_took_over():
    store, clock = FakeStore(), Clock()
    holder = lease(store, elsewhere("a"), clock)
    holder.acquire()
    clock.now += TTL + 30  # stalled past its expiry
    assert holder.renew().generation == 2
    assert current_lease(*store.read(RUN)).holder.host == "a"


def test_a_late_renewal_loses_to_a_newcomer_claiming_at_the_same_time():
    store, clock = FakeStore(), Clock()
    holder = lease(store, elsewhere("a"), clock)
    holder.acquire()
    clock.now += TTL + 30
    newcomer = lease(store, elsewhere("b"), clock)
    store.before_claim = newcomer.acquire  # b takes generation 2 just before a's claim
    with pytest.raises(WriterLostError, match="taken over by host b"):
        holder.renew()


def test_a_stale_tag_of_an_older_generation_does_not_count():
    store, clock = FakeStore(), Clock()
    a = lease(store, elsewhere("a"), clock)
    a.acquire()
    clock.now += TTL + 1
    lease(store, elsewhere("b"), clock).acquire()
    store.set_tag(RUN, LEASE_TAG, replace(a.record, expires=clock.now + 999).to_json())
    assert current_lease(*store.read(RUN)).holder.host == "b"  # generation 2's own record


def test_the_param_compare_and_swap_on_an_mlflow_store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("leases")).info.run_id
    store = MlflowLeaseStore(uri)
    assert store.claim(run_id, "lease.1", "a") and store.claim(run_id, "lease.1", "a")
    assert not store.claim(run_id, "lease.1", "b")  # logged with another value: refused
    first = RunLease(store, run_id, elsewhere("b"), TTL)
    assert first.acquire().generation == 2  # "a" is no record: an expired generation 1
    second = RunLease(store, run_id, elsewhere("c"), TTL)
    with pytest.raises(WriterBusyError, match="already being written by host b"):
        second.acquire()
    first.release()
    assert second.acquire().generation == 3
    params = client.get_run(run_id).data.params
    assert params["lease.3"] == second.record.to_json()
    assert current_lease(params, client.get_run(run_id).data.tags) == second.record


def _unused_pid() -> int:
    pid = 4_000_000
    while os.path.exists(f"/proc/{pid}"):
        pid += 1
    return pid
