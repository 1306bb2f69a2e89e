"""CPU threads: ``threads=`` config, the automatic count, and OpenMP's passive wait policy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from learned_at.runners import threads
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
    environ = {k: v for k, v in os.environ.items() if k != threads.WAIT_POLICY_ENV}
    environ.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                          text=True, check=True, timeout=300).stdout.strip()


def test_wait_policy_is_set_before_torch_loads_unless_the_user_chose_one():
    probe = ("import learned_at.runners, os, learned_at.runners.threads as t; "
             "print(os.environ.get('OMP_WAIT_POLICY'), t.wait_policy_applied())")
    assert _python(probe) == "PASSIVE True"
    assert _python(probe, OMP_WAIT_POLICY="active") == "active True"
    # torch first: too late for OpenMP, and the module knows it
    assert _python("import torch; " + probe.replace("import learned_at.runners, ", "import ")) \
        .endswith("False")


def test_negative_threads_is_a_config_error(capsys):
    from learned_at.runners.cotrain import main
    from tests.helpers import run_command

    assert run_command(main, ["threads=-1", "progress=false"]) == 2
    assert "threads=-1" in capsys.readouterr().err
