"""The lock beside a run's checkpoint (runners/run_lock.py) and the writer that holds it with
the lease (runners/run_writer.py)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from learned_at.runners.run_lock import LOCK_NAME, RunLock
from learned_at.runners.run_writer import claim_run
from learned_at.runners.writer_identity import Holder, WriterBusyError, WriterLostError
from tests.runners.test_run_lease import FakeStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock")


def test_a_second_lock_on_the_same_run_is_refused_naming_the_holder(tmp_path):
    me = Holder.this_process()
    first = RunLock(tmp_path / "run1", "run1", me)
    first.acquire()
    second = RunLock(tmp_path / "run1", "run1", replace(me, token="other"))
    with pytest.raises(WriterBusyError) as refused:
        second.acquire()
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("run run1 is already being written on this machine by host ")
    assert f"process {me.pid} (since " in message and str(tmp_path / "run1" / LOCK_NAME) in message
    first.release()
    assert not (tmp_path / "run1" / LOCK_NAME).exists()  # the folder stays clean
    second.acquire()
    assert second.held
    second.release()


def test_the_lock_of_a_killed_process_is_free(tmp_path):
    folder = tmp_path / "run1"
    code = ("import os, sys; from learned_at.runners.run_lock import RunLock; "
            "from learned_at.runners.writer_identity import Holder; "
            f"RunLock({str(folder)!r}, 'run1', Holder.this_process()).acquire(); "
            "os.kill(os.getpid(), 9)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert done.returncode == -9, done.stderr
    assert (folder / LOCK_NAME).exists()  # left behind, but nobody holds it
    lock = RunLock(folder, "run1", Holder.this_process())
    lock.acquire()
    lock.release()


def test_a_writer_holds_lock_and_lease_until_it_releases(tmp_path):
    store = FakeStore()
    writer = claim_run("run1", tmp_path, None, 300.0, store=store)
    assert (tmp_path / "run1" / LOCK_NAME).exists()
    with pytest.raises(WriterBusyError, match="on this machine"):
        claim_run("run1", tmp_path, None, 300.0, store=store)
    with pytest.raises(WriterBusyError, match="already being written by host"):
        claim_run("run1", tmp_path / "elsewhere", None, 300.0, store=store)  # another machine
    writer.renew_now()
    writer.check()
    writer.release()
    writer.release()  # only the first call acts
    again = claim_run("run1", tmp_path / "elsewhere", None, 300.0, store=store)
    assert again.lease.record.generation == 2
    again.release()


def test_a_writer_taken_over_stops_at_its_next_check(tmp_path):
    store = FakeStore()
    writer = claim_run("run1", tmp_path, None, 300.0, store=store)
    record = writer.lease.record
    newer = replace(record, holder=replace(record.holder, token="x", host="node7"),
                    generation=2)
    store.params["run1"]["lease.2"] = newer.to_json()  # it expired; node7 took over
    writer.renew_now()
    with pytest.raises(WriterLostError, match="taken over by host node7"):
        writer.check()
    writer.release()
    assert store.tags["run1"]["lease"] == record.to_json()  # a lost lease is not touched
