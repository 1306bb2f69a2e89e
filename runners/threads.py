"""CPU threads that degrade gracefully when the machine is shared (``threads=`` config).

* :func:`apply_threads` sets torch's intra-op thread count: ``threads=N`` pins N; ``threads=0``
  (the default) starts at the CPUs this process may really use — its affinity mask, a cgroup
  CPU quota (containers), divided among the processes of a ``torchrun`` job on this node
  (``LOCAL_WORLD_SIZE``) — and never raises torch's current count (its default, one per core,
  or ``OMP_NUM_THREADS``, or what the caller set).
* :func:`make_governor`: with ``threads=0`` the count then follows the CPUs other processes
  leave free, between training batches (:mod:`runners.thread_governor`, which says why: a
  team of spinning OpenMP workers beside a busy core is many times slower, one thread is
  not). OpenMP's own wait policy is left alone, so a run that has the machine to itself keeps
  its speed; ``OMP_WAIT_POLICY`` and ``GOMP_SPINCOUNT`` set by the user reach OpenMP as given.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from learned_at.runners.thread_governor import ThreadGovernor

__all__ = ["apply_threads", "available_cpus", "auto_threads", "make_governor"]


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
    return n


def make_governor(threads: int, ceiling: int) -> ThreadGovernor | None:
    """The governor of ``threads=0`` (None when ``threads`` pins a count, when the ceiling is
    one thread, or when the CPU accounting cannot be read)."""
    if threads or ceiling <= 1:
        return None
    governor = ThreadGovernor(ceiling)
    return governor if governor.meter.available else None
