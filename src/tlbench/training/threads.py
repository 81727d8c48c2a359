"""CPU threads that survive a busy machine: passive OpenMP waiting, and threads x workers from usable cores.

With torch's default, OpenMP threads spin while they wait for each other; on a CPU another process
also uses, a spinning thread is descheduled in turn and a training step ran 3.3x slower (3.72 s vs
1.12 s with ``OMP_WAIT_POLICY=PASSIVE``, EfficientNet-Lite0 at 224 px, batch 8, 2 cores). The policy
is read when the OpenMP runtime starts, i.e. when torch is imported: :func:`passive_wait_default` must
run before that. Imports nothing heavy (no torch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
WORKERS_ENV = "TLBENCH_WORKERS"  # the default of ``tlbench sweep --workers`` (a number or "auto")
WORKER_MEMORY_GB = 4.0  # headroom per worker: a full fine-tune at 224 px, batch 16 peaked at 3.0 GB


def passive_wait_default() -> str:
    """``OMP_WAIT_POLICY=PASSIVE`` unless the user's environment says otherwise; returns the policy."""
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


def available_memory_gb() -> float:
    """Memory the OS could give new processes now (``MemAvailable`` on Linux), in GiB."""
    import psutil  # light, but imported only when asked: the CLI imports this module first

    return psutil.virtual_memory().available / 2**30


def auto_workers(*, gpu: bool, usable: int | None = None, memory_gb: float | None = None) -> tuple[int, str]:
    """``--workers auto``: on a CPU, one single-threaded worker per usable core (as memory allows); on a
    GPU, one. Returns the count and why.

    Why not one worker with every core: measured on 2 cores (docs/benchmarks.md), a two-thread trial
    either spins (fast alone, 3.3x slower when another process runs) or waits passively (robust, but
    2.3x slower alone at 32 px: each of thousands of small parallel regions wakes a sleeping thread).
    A single-threaded trial has no OpenMP team to synchronise, and two of them side by side train
    more images per second and per CPU-second than one two-threaded trial either way (the smoke study:
    14 min with 1 worker x 2 threads, 4 min 17 s with 2 x 1).
    """
    if gpu:
        return 1, "one worker on the GPU (more can share it: --workers N)"
    usable = usable_cores() if usable is None else usable
    memory_gb = available_memory_gb() if memory_gb is None else memory_gb
    workers, reason = usable, f"one single-threaded worker per usable core ({usable})"
    if memory_gb < usable * WORKER_MEMORY_GB:
        workers = max(1, int(memory_gb // WORKER_MEMORY_GB))
        reason += f", {workers} as {memory_gb:.0f} GiB free memory allows ({WORKER_MEMORY_GB:g} GiB each)"
    return workers, reason


def parse_workers(value: str) -> int | None:
    """``--workers``: a number >= 1, or ``auto`` (None: decided by :func:`auto_workers`)."""
    if value.strip().lower() == "auto":
        return None
    try:
        workers = int(value)
    except ValueError:
        raise ValueError(f"--workers must be a number >= 1 or 'auto', got {value!r}") from None
    if workers < 1:
        raise ValueError(f"--workers must be >= 1 or 'auto', got {workers}")
    return workers


@dataclass(frozen=True)
class ThreadPlan:
    """How many workers, and torch threads per worker, a sweep runs with, and why."""

    workers: int
    threads: int  # torch intra-op threads per worker
    reason: str

    @property
    def summary(self) -> str:
        return f"{self.workers} worker(s) x {self.threads} thread(s): {self.reason}"


def plan_threads(workers: int, *, usable: int | None = None, busy: float | None = None) -> ThreadPlan:
    """Threads per worker: the usable cores split between the workers (at least 1 each), never the load.

    The thread count changes a trial's numbers: at the same seed, 1 and 2 threads give different
    losses and accuracies (their reductions split differently), while torch's CPU kernels are
    bit-identical run to run at a fixed count. Planning from the load average would make a result
    depend on what else ran when it started. Passive waiting (:func:`passive_wait_default`) is what
    keeps threads from collapsing on a busy machine: a waiting thread sleeps and lends its core. The
    load is measured only to say so in the reason line.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers=}")
    usable = usable_cores() if usable is None else usable
    busy = busy_cores() if busy is None else busy
    threads = max(1, usable // workers)
    reason = f"{usable} usable cores shared by {workers} worker(s) (load {busy:.1f}"
    if busy >= 0.5 * usable:
        wait = os.environ.get(WAIT_POLICY_ENV, "torch's default")
        reason += f": a busy machine, threads wait with {WAIT_POLICY_ENV}={wait} instead of spinning"
    reason += "; the count never follows the load, so a seed gives the same result)"
    return ThreadPlan(workers=workers, threads=threads, reason=reason)


def trial_threads(requested: int | None) -> ThreadPlan:
    """Set torch's intra-op threads for one trial in this process, and say how many and why:
    ``trainer.num_threads`` when set; else one worker's plan (:func:`plan_threads`), unless this process
    already runs fewer (torch's default of physical cores, or a sweep worker's share is kept)."""
    import torch  # here, not at the top: this module is imported before torch may load

    if requested is not None and requested < 1:
        raise ValueError(f"threads must be >= 1, got {requested=}")
    plan = plan_threads(1)
    current = torch.get_num_threads()
    if requested is not None:
        plan = replace(plan, workers=1, threads=requested, reason="trainer.num_threads")
    elif current < plan.threads:
        reason = f"this process's {current} thread(s), fewer than the plan's {plan.threads}: {plan.reason}"
        plan = replace(plan, threads=current, reason=reason)
    if current != plan.threads:
        torch.set_num_threads(plan.threads)
    return plan
