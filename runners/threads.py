"""CPU threads that degrade gracefully when the machine is shared (``threads=`` config).

Why: torch's intra-op pool is OpenMP (libgomp). With OpenMP's default wait policy an idle
worker *spins* at the end of every parallel region, and the next region cannot start before
every worker has arrived. When another process holds one of the cores, the worker that was
descheduled delays every small operation by a scheduler time slice while its sibling burns
the other core spinning. Measured on 2 cores (the default digits run, 2 threads, LAS-AT):
0.9 s per epoch alone, 23.7 s beside one other process, and ≈ 60 s per epoch at a background
load of ≈ 10; with ``OMP_WAIT_POLICY=PASSIVE`` the same run took ≈ 10 s per epoch at that load
(``python -m benchmarks.contention`` measures it, alone and beside a CPU hog, in one run).

What this module does:

* :func:`default_wait_policy` (called by ``runners/__init__.py``, i.e. before this project
  imports torch) sets ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it: idle workers sleep
  instead of spinning. libgomp reads the variable once, when torch loads it; setting it later
  has no effect, which :func:`apply_threads` detects and reports.
* :func:`apply_threads` sets torch's intra-op thread count: ``threads=N`` pins N; ``threads=0``
  (the default) takes the CPUs this process may really use — its affinity mask, a cgroup CPU
  quota (containers), divided among the processes of a ``torchrun`` job on this node
  (``LOCAL_WORLD_SIZE``) — and never raises torch's current count (its default, one per
  core, or ``OMP_NUM_THREADS``, or what the caller set).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path

__all__ = ["WAIT_POLICY_ENV", "apply_threads", "available_cpus", "auto_threads",
           "default_wait_policy", "wait_policy_applied"]

_log = logging.getLogger(__name__)

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
#: whether the wait policy was in the environment before torch was first imported
_POLICY_BEFORE_TORCH: bool | None = None
_WARNED = False


def default_wait_policy() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose one (call before importing torch).

    Records whether torch was already imported, so :func:`wait_policy_applied` can tell if the
    setting reached OpenMP.
    """
    global _POLICY_BEFORE_TORCH
    if _POLICY_BEFORE_TORCH is not None:
        return
    if "torch" in sys.modules:  # libgomp has already read its environment
        _POLICY_BEFORE_TORCH = WAIT_POLICY_ENV in os.environ
        return
    os.environ.setdefault(WAIT_POLICY_ENV, "PASSIVE")
    _POLICY_BEFORE_TORCH = True


def wait_policy_applied() -> bool:
    """True when OpenMP started with an explicit wait policy (ours or the user's)."""
    return bool(_POLICY_BEFORE_TORCH)


def _cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs granted by a cgroup v2 quota (``cpu.max`` = "quota period"), None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def available_cpus() -> int:
    """CPUs this process can use: affinity mask, capped by a cgroup quota (rounded up)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def auto_threads(current: int) -> int:
    """Intra-op threads for ``threads=0``.

    Args:
        current: torch's current count (its default: one per core, or ``OMP_NUM_THREADS``).

    Returns:
        min(current, available CPUs // processes of this job on the node), at least 1.
    """
    local_procs = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, min(current, available_cpus() // local_procs))


def apply_threads(threads: int) -> int:
    """Set torch's intra-op threads (``threads`` > 0 pins, 0 = :func:`auto_threads`).

    Returns:
        The number of threads now in use.

    Raises:
        ValueError: ``threads`` is negative.
    """
    import torch

    if threads < 0:
        raise ValueError(f"threads={threads}: give a positive number of CPU threads, or 0 for "
                         "the automatic choice")
    n = threads or auto_threads(torch.get_num_threads())
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    global _WARNED
    if n > 1 and not wait_policy_applied() and not _WARNED:
        _WARNED = True
        _log.warning("OpenMP started without OMP_WAIT_POLICY (torch was imported before this "
                     "project); %d spinning threads slow down badly on a shared machine. Set "
                     "OMP_WAIT_POLICY=PASSIVE before starting Python, or use threads=1.", n)
    return n

