"""CPU threads: ``threads=`` config, the automatic count, and OpenMP's passive wait policy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from learned_at.runners import thread_governor, threads
from learned_at.runners.compose import compose_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_config_pins_the_count(restore_threads):
    assert compose_config(["threads=1"]).threads == 1
    assert threads.apply_threads(1) == 1 and torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="threads=-2"):
        threads.apply_threads(-2)


def test_auto_never_raises_the_count_and_shares_cpus_among_local_ranks(monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 8)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert threads.auto_threads(16) == 8  # capped by the CPUs this process may use
    assert threads.auto_threads(2) == 2  # never more than torch's current count
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun --nproc_per_node=4
    assert threads.auto_threads(16) == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert threads.auto_threads(16) == 1


def test_cgroup_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads._cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads._cgroup_cpu_quota(tmp_path) is None
    assert threads._cgroup_cpu_quota(tmp_path / "missing") is None


def _python(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    environ.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                          text=True, check=True, timeout=300).stdout.strip()


def test_openmp_settings_are_the_users():
    """The project sets no OpenMP variable: what the user exports reaches OpenMP unchanged."""
    probe = "import learned_at.runners.cotrain, os; print(os.environ.get('OMP_WAIT_POLICY'))"
    assert _python(probe) == "None"
    assert _python(probe, OMP_WAIT_POLICY="active") == "active"


def _stat(busy: dict[int, int]) -> str:
    """A /proc/stat with the aggregate line and one line per CPU (busy jiffies in user)."""
    lines = ["cpu  999 0 0 0 0 0 0 0 0 0"]
    lines += [f"cpu{c} {b} 0 0 5000 0 0 0 0 0 0" for c, b in busy.items()]
    return "\n".join([*lines, "intr 1 2 3", "ctxt 5"]) + "\n"


def test_cpu_meter_counts_other_processes_on_the_watched_cpus(tmp_path):
    stat = tmp_path / "stat"
    own, wall = [0.0], [0.0]
    stat.write_text(_stat({0: 0, 1: 0, 2: 0}))
    meter = thread_governor.CpuMeter(cpus={0, 1}, stat_path=stat, own_cpu_s=lambda: own[0],
                             clock=lambda: wall[0])
    meter.tick = 100.0
    # 2 s later: CPUs 0 and 1 were busy 300 jiffies = 3 s, of which this process used 1 s;
    # CPU 2 (not ours) was busy too and does not count
    stat.write_text(_stat({0: 200, 1: 100, 2: 200}))
    own[0], wall[0] = 1.0, 2.0
    assert meter.sample() == pytest.approx(1.0)  # one CPU's worth of other work
    own[0], wall[0] = 3.0, 3.0  # the next second: only this process (2 CPUs) ran
    stat.write_text(_stat({0: 300, 1: 200, 2: 200}))
    assert meter.sample() == pytest.approx(0.0)
    assert not thread_governor.CpuMeter(stat_path=tmp_path / "missing").available


class _FakeMeter:
    def __init__(self, cpus: int, readings: list[float]) -> None:
        self.cpus, self.readings = set(range(cpus)), list(readings)

    def sample(self) -> float:
        return self.readings.pop(0)


def test_governor_shrinks_at_once_and_grows_after_two_agreeing_samples():
    clock, applied = [0.0], []
    meter = _FakeMeter(2, [0.1, 1.0, 1.1, 0.2, 0.9, 0.2, 0.1, 0.0])
    gov = thread_governor.ThreadGovernor(2, meter, interval_s=1.0,
                                         set_threads=applied.append, clock=lambda: clock[0])
    seen = []
    for t in range(9):
        clock[0] = float(t) + 0.5
        assert gov.poll() == gov.threads and gov.poll() == gov.threads  # ≤ one sample/interval
        seen.append(gov.threads)
    # samples: 0.1 idle, 1.0 hog -> 1 at once, 1.1, 0.2 (once), 0.9 (reset), 0.2, 0.1 -> 2
    assert seen == [2, 2, 1, 1, 1, 1, 1, 2, 2] and applied == [1, 2]
    # a second thread only where at least 3/4 of a second CPU is free
    assert [gov.target(o) for o in (0.0, 0.25, 0.3, 1.5, 5.0)] == [2, 2, 1, 1, 1]
    wide = thread_governor.ThreadGovernor(4, _FakeMeter(8, []), set_threads=applied.append)
    assert wide.target(0.0) == 4 and wide.target(5.0) == 3


def test_threads_zero_gets_a_governor_and_a_pinned_count_none():
    assert threads.make_governor(1, 1) is None and threads.make_governor(3, 3) is None
    assert threads.make_governor(0, 1) is None  # one CPU: nothing to govern
    gov = threads.make_governor(0, 2)
    assert gov is None or (gov.ceiling == 2 and gov.meter.available)


def test_negative_threads_is_a_config_error(capsys):
    from learned_at.runners.cotrain import main
    from tests.helpers import run_command

    assert run_command(main, ["threads=-1", "progress=false"]) == 2
    assert "threads=-1" in capsys.readouterr().err
