"""A study's journal file checked before Optuna opens it: a torn last record is cut off.

Optuna appends each record as one JSON line. A crash or a full disk in the middle of an append
leaves the last line incomplete; Optuna skips it on reading, but the next append lands on the same
line and every later reader fails with a ``JSONDecodeError``. So the incomplete tail is cut off here
(the file as found is kept as ``<file>.corrupt-<time>``) and the study goes on from its complete
records. A bad record before the end is not a torn write; that stops the sweep with what to do.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from optuna.storages.journal import JournalFileSymlinkLock

from tlbench.errors import TrackingError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JournalScan:
    """Where a journal's complete records end, and where its first bad line (if any) starts."""

    size: int
    good_bytes: int  # the complete, readable records from the start
    bad_line: int | None = None  # 1-based number of the first unreadable line
    torn_tail: bool = False  # that line is the last one: only the tail is damaged

    @property
    def intact(self) -> bool:
        return self.bad_line is None


def scan_journal(path: Path) -> JournalScan:
    offset = 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not _readable(line):
                size = os.fstat(handle.fileno()).st_size
                last = offset + len(line) >= size
                return JournalScan(size, good_bytes=offset, bad_line=number, torn_tail=last)
            offset += len(line)
    return JournalScan(offset, good_bytes=offset)


def _readable(line: bytes) -> bool:
    if not line.endswith(b"\n"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False


def check_journal(path: Path) -> None:
    """Cut a torn last record off ``path`` (keeping a backup); raise if a record before it is bad.

    The scan runs without a lock; only when it finds damage is it repeated under Optuna's own
    journal lock, so an append in progress in another process is never mistaken for a torn one.
    """
    if not path.is_file() or scan_journal(path).intact:
        return
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        scan = scan_journal(path)
        if scan.intact:
            return  # another process was appending, or has repaired it meanwhile
        if not scan.torn_tail:
            raise TrackingError(
                f"Optuna journal {path} has an unreadable record at line {scan.bad_line}, before its "
                "end, so it was not torn by a crash and cannot be repaired by cutting its tail: restore "
                f"it from a backup, or move it aside (mv {path} {path}.bad) to start the study afresh"
            )
        backup = _backup_name(path)
        shutil.copy2(path, backup)
        os.truncate(path, scan.good_bytes)
    finally:
        lock.release()
    log.warning(
        "Optuna journal %s ended in an incomplete record (a crash or a full disk while writing): "
        "cut off its last %d bytes and went on from its complete records; the file as found is kept "
        "as %s",
        path,
        scan.size - scan.good_bytes,
        backup,
    )


def _backup_name(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    backup = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while backup.exists():
        n += 1
        backup = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    return backup
