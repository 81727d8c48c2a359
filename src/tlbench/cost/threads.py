"""CPU threads that survive a busy machine: passive OpenMP waiting, and threads x workers from free cores.

With torch's default, OpenMP threads spin while they wait for each other; on a CPU another process
also uses, a spinning thread is descheduled in turn and a training step ran 3.3x slower (3.72 s vs
1.12 s with ``OMP_WAIT_POLICY=PASSIVE``, EfficientNet-Lite0 at 224 px, batch 8, 2 cores). The policy
is read when the OpenMP runtime starts, i.e. when torch is imported: :func:`passive_wait_default` must
run before that. Imports nothing heavy (no torch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"


def passive_wait_default() -> str:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user's environment says otherwise; returns the policy."""
    return os.environ.setdefault(WAIT_POLICY_ENV, "PASSIVE")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's or SLURM's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def busy_cores() -> float:
    """Cores other processes keep busy now: the 1-minute load average (0 where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


@dataclass(frozen=True)
class ThreadPlan:
    """How many workers, and torch threads per worker, a sweep runs with, and why."""

    workers: int
    threads: int  # torch intra-op threads per worker
    usable: int  # cores this process may use
    busy: float  # load average when planned
    reason: str

    @property
    def summary(self) -> str:
        return f"{self.workers} worker(s) x {self.threads} thread(s): {self.reason}"


def plan_threads(workers: int, *, usable: int | None = None, busy: float | None = None) -> ThreadPlan:
    """Threads per worker so that workers x threads fit in the cores not already busy (at least 1 each).

    Oversubscribing cores is what makes threads wait on each other; one thread per worker on a
    saturated machine keeps a step at its single-thread speed instead of collapsing.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers=}")
    usable = usable_cores() if usable is None else usable
    busy = busy_cores() if busy is None else busy
    free = max(1, int(usable - busy + 0.5))  # a load of 0.3 on an idle machine still frees the core
    threads = max(1, free // workers)
    if free < workers:
        reason = (
            f"{usable} usable cores, load {busy:.1f}: about {free} free, fewer than the workers, "
            "so 1 thread each"
        )
    else:
        reason = f"{usable} usable cores, load {busy:.1f}: about {free} free, shared by {workers} worker(s)"
    return ThreadPlan(workers=workers, threads=threads, usable=usable, busy=busy, reason=reason)
