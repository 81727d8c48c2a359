"""Is the process that owns a RUNNING trial still alive? Worker identity, heartbeats, the registry.

Optuna's own heartbeat exists only for RDB storages and only inside ``study.optimize``; the sweep
claims trials with ask/tell on any storage, so it keeps its own: each worker records
``host:pid:start`` on the trials it runs and a heartbeat in the meta study. On the same host a
trial's owner is alive iff that pid exists with the same start time (pids are reused); on another
host, iff its heartbeat is fresh.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEARTBEAT_SECONDS = 20.0
STALE_AFTER_SECONDS = 120.0  # a worker on another host is dead after this long without a heartbeat
WORKER_ATTR = "worker"  # user attr of each trial: the WorkerId running it
REGISTRY_PREFIX = "worker:"


def _proc_stat(pid: int) -> list[str]:
    """Fields of ``/proc/<pid>/stat`` after the command name (Linux); [] where unavailable."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return []


def _start_token(pid: int) -> str:
    """The process start time in clock ticks since boot (Linux), '' where unknown."""
    fields = _proc_stat(pid)
    return fields[19] if len(fields) > 19 else ""


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class WorkerId:
    host: str
    pid: int
    start: str

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.start}"

    @classmethod
    def parse(cls, text: str) -> WorkerId | None:
        parts = text.rsplit(":", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        return cls(host=parts[0], pid=int(parts[1]), start=parts[2])

    @classmethod
    def current(cls) -> WorkerId:
        pid = os.getpid()
        return cls(host=socket.gethostname(), pid=pid, start=_start_token(pid))

    @property
    def registry_key(self) -> str:
        return f"{REGISTRY_PREFIX}{self}"


def is_alive(
    worker: WorkerId | None,
    registry: Mapping[str, Any],
    *,
    now: float | None = None,
    stale_after: float = STALE_AFTER_SECONDS,
) -> bool:
    """Whether ``worker`` may still be working; ``registry``: the meta study's user attrs."""
    if worker is None:
        return False
    if worker.host == socket.gethostname():
        fields = _proc_stat(worker.pid)
        if not _pid_exists(worker.pid) or (fields and fields[0] in ("Z", "X")):  # a zombie is dead
            return False
        return not worker.start or _start_token(worker.pid) in ("", worker.start)
    entry = registry.get(worker.registry_key)
    if not isinstance(entry, Mapping) or entry.get("state") != "running":
        return False
    return (now if now is not None else time.time()) - float(entry.get("beat", 0.0)) < stale_after


class Heartbeat:
    """A daemon thread calling ``beat()`` every ``interval`` seconds until stopped."""

    def __init__(self, beat: Callable[[], None], *, interval: float = HEARTBEAT_SECONDS) -> None:
        self._beat = beat
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tlbench-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(Exception):  # a missed beat is harmless; the next one may succeed
                self._beat()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
