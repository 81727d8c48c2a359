"""Local worker processes: spawn N copies of the sweep command, forward Ctrl-C once, wait.

Each worker is ``python -m tlbench.cli sweep … --worker`` (an argument list, no shell), in its own
session so that a terminal's Ctrl-C reaches only the supervisor, which then sends exactly one SIGINT
to each worker: a second one could interrupt a worker while it records its trial. The storage URL
travels in the environment, not on the command line, where ``ps`` would show its password. A
worker whose supervisor disappears (``kill -9``) finishes its current trial and stops.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)
STORAGE_ENV = "TLBENCH_SWEEP_STORAGE"
SUPERVISOR_ENV = "TLBENCH_SWEEP_SUPERVISOR"  # the supervisor's pid, so a worker notices it is orphaned


def worker_command(
    sweep: str, study: str, workers: int, index: int, *, threads: int, extra: Sequence[str] = ()
) -> list[str]:
    """A local worker's command line; ``threads``: the supervisor's plan (every worker the same);
    ``extra``: the supervisor's --data/--class-map/overrides."""
    return [
        sys.executable, "-m", "tlbench.cli", "sweep", "--sweep", sweep, "--study", study,
        "--workers", str(workers), "--worker-index", str(index), "--threads", str(threads), "--worker",
        *extra,
    ]  # fmt: skip


def spawn(
    sweep: str,
    study: str,
    workers: int,
    *,
    storage: str | None,
    threads: int,
    log_dir: Path,
    extra: Sequence[str] = (),
) -> list[subprocess.Popen[bytes]]:
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, SUPERVISOR_ENV: str(os.getpid())}
    if storage:
        env[STORAGE_ENV] = storage
    procs = []
    for index in range(workers):
        with (log_dir / f"worker-{index}.log").open("ab") as out:
            procs.append(
                subprocess.Popen(
                    worker_command(sweep, study, workers, index, threads=threads, extra=extra),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
            )
    return procs


def wait(procs: Sequence[subprocess.Popen[bytes]], *, poll_s: float = 0.5) -> list[int]:
    """Wait for every worker; Ctrl-C stops them cleanly (see :func:`stop`) and is then re-raised."""
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(poll_s)
    except KeyboardInterrupt:
        stop(procs)
        raise
    return [int(p.returncode) for p in procs]


def stop(procs: Sequence[subprocess.Popen[bytes]], *, grace_s: float = 60.0) -> None:
    """SIGINT once (trials end recorded as interrupted), then SIGTERM, then SIGKILL."""
    for sig, patience in ((signal.SIGINT, grace_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        alive = [p for p in procs if p.poll() is None]
        if not alive:
            return
        for proc in alive:
            proc.send_signal(sig)
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline and any(p.poll() is None for p in alive):
            try:
                time.sleep(0.2)
            except KeyboardInterrupt:
                log.warning("still stopping the workers (waiting for them to record their trials)")


def supervisor_gone() -> bool:
    """In a worker: the supervisor that spawned it has died (the worker was re-parented)."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    return bool(supervisor) and str(os.getppid()) != supervisor
