"""``threads=0``: torch's intra-op pool follows the CPUs other processes leave free.

Why: torch's CPU pool is OpenMP (libgomp). With OpenMP's default wait policy a worker spins
briefly at the end of every parallel region, which is what makes a run fast when it has the
cores to itself; when another process holds one of them, the descheduled worker delays every
small operation by a scheduler time slice while its sibling spins. ``OMP_WAIT_POLICY=PASSIVE``
(workers sleep) fixes the shared case and costs a run alone about 50 % (benchmarks/contention.py
and the README's table). One thread has no team to wait for: it is as fast beside a CPU hog as
the free core allows.

So the default keeps OpenMP's own wait policy and sizes the team to the idle CPUs instead:
:class:`ThreadGovernor` samples, at most once per ``interval_s`` and only between training
batches, how many of this process's CPUs *other* processes kept busy since the last sample
(:class:`CpuMeter`: the allowed CPUs' lines of ``/proc/stat`` minus this process's own CPU
time), and sets torch's thread count to the CPUs left (at least 1, at most the ceiling that
``threads=0`` allows, :func:`runners.threads.auto_threads`). It shrinks at once and grows back
only after two samples agree, so a passing burst does not make it flap. ``threads=N`` pins N
(no governor); ``OMP_WAIT_POLICY`` / ``GOMP_SPINCOUNT`` set by the user reach OpenMP
unchanged. Without ``/proc/stat`` (not Linux) the count stays at the ceiling.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["CpuMeter", "ThreadGovernor"]


def _allowed_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return set(range(os.cpu_count() or 1))


class CpuMeter:
    """CPUs kept busy by other processes since the previous sample.

    Args:
        cpus: the CPU ids to watch (this process's affinity mask by default).
        stat_path: the kernel's CPU accounting (``/proc/stat``).
        own_cpu_s: this process's CPU seconds so far (all threads).
        clock: wall-clock seconds.
    """

    def __init__(self, cpus: Iterable[int] | None = None, stat_path: str | Path = "/proc/stat",
                 own_cpu_s: Callable[[], float] = time.process_time,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cpus = set(_allowed_cpus() if cpus is None else cpus)
        self.stat_path = Path(stat_path)
        self.own_cpu_s, self.clock = own_cpu_s, clock
        self.tick = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self._last = self._read()

    def _busy_s(self) -> float | None:
        """Busy seconds of the watched CPUs since boot (user, nice, system, irq, softirq,
        steal), None when the file is missing or unreadable."""
        try:
            lines = self.stat_path.read_text().splitlines()
        except OSError:
            return None
        busy = 0
        for line in lines:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in self.cpus:
                continue
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
            busy += user + nice + system + irq + softirq + steal
        return busy / self.tick

    def _read(self) -> tuple[float, float, float] | None:
        busy = self._busy_s()
        return None if busy is None else (busy, self.own_cpu_s(), self.clock())

    @property
    def available(self) -> bool:
        """Whether the accounting can be read here."""
        return self._last is not None

    def sample(self) -> float | None:
        """Mean CPUs other processes used since the previous sample (≥ 0), None when unknown."""
        now = self._read()
        last, self._last = self._last, now
        if now is None or last is None or now[2] <= last[2]:
            return None
        others = (now[0] - last[0]) - (now[1] - last[1])
        return max(0.0, others / (now[2] - last[2]))


class ThreadGovernor:
    """Sets torch's intra-op threads to the CPUs other processes leave free (module docstring).

    Args:
        ceiling: the most threads (what ``threads=0`` allows).
        meter: the CPU meter (a :class:`CpuMeter` over this process's CPUs by default).
        interval_s: the least wall time between two samples.
        set_threads: applies a count (``torch.set_num_threads``).
        clock: wall-clock seconds.
    """

    def __init__(self, ceiling: int, meter: CpuMeter | None = None, interval_s: float = 1.0,
                 set_threads: Callable[[int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if set_threads is None:
            import torch

            set_threads = torch.set_num_threads
        self.ceiling = max(1, ceiling)
        self.meter = meter if meter is not None else CpuMeter()
        self.cpus = max(1, len(self.meter.cpus))
        self.interval_s, self.clock, self._set = interval_s, clock, set_threads
        self.threads = self.ceiling
        self._next = clock() + interval_s
        self._pending: int | None = None  # a larger count seen once, waiting for a second look

    def target(self, others: float) -> int:
        """Threads for ``others`` CPUs busy with other work: the free CPUs, rounded down unless
        at least 3/4 of one is free, between 1 and the ceiling."""
        free = self.cpus - others
        return max(1, min(self.ceiling, int(free + 0.25)))

    def poll(self) -> int:
        """Between two batches: resample when the interval has passed; returns the count."""
        now = self.clock()
        if now < self._next:
            return self.threads
        self._next = now + self.interval_s
        others = self.meter.sample()
        if others is None:
            return self.threads
        want = self.target(others)
        if want < self.threads or (want > self.threads and self._pending == want):
            self.threads, self._pending = want, None
            self._set(want)
        else:
            self._pending = want if want > self.threads else None
        return self.threads
