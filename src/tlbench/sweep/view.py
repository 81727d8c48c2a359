"""Draw the progress: a ``rich`` live table on a terminal, plain log lines elsewhere (CI logs).

A background thread polls its own storage connection, so the view never waits on training and the
training thread never waits on the view.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from tlbench.sweep.progress import ProgressInfo, format_duration

log = logging.getLogger("tlbench.sweep")


def render_line(info: ProgressInfo) -> str:
    parts = []
    for p in info.phases:
        if p.planned == 0:  # nothing planned in this phase (e.g. no tuning): no "tune 0/0"
            continue
        extra = [
            f"{n} {label}"
            for n, label in (
                (p.pruned, "pruned"),
                (p.failed - p.collapsed, "failed"),
                (p.collapsed, "collapsed"),
                (p.running, "running"),
            )
            if n
        ]
        parts.append(
            f"{p.name} {p.complete + p.pruned + p.failed}/{p.planned}"
            + (f" ({', '.join(extra)})" if extra else "")
        )
    best = ", ".join(f"{k} {v:.3f}" for k, v in info.best.items())
    line = (
        " | ".join(parts) + f" | elapsed {format_duration(info.elapsed_s)}, ETA {format_duration(info.eta_s)}"
    )
    return line + (f" | best val/acc: {best}" if best else "")


def render_table(info: ProgressInfo, title: str) -> Group:
    table = Table(title=title, title_justify="left")
    for column in ("phase", "done", "pruned", "failed", "redone", "running", "remaining", "mean trial"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for p in info.phases:
        if p.planned == 0:
            continue
        table.add_row(
            p.name, f"{p.complete}/{p.planned}", str(p.pruned), str(p.failed), str(p.redone), str(p.running),
            str(p.remaining), format_duration(p.mean_s),
        )  # fmt: skip
    best = Table(show_header=True, box=None)
    best.add_column("strategy")
    best.add_column("best val/acc", justify="right")
    for strategy, value in info.best.items():
        best.add_row(strategy, f"{value:.4f}")
    footer = f"elapsed {format_duration(info.elapsed_s)}   ETA {format_duration(info.eta_s)}"
    return Group(table, best, footer)


@contextlib.contextmanager
def _logs_above(live: Live) -> Iterator[None]:
    """Route log handlers through Live's stderr proxy, so log lines scroll above the table."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    streams = [h.stream for h in handlers]
    for handler in handlers:
        handler.setStream(sys.stderr)  # Live has replaced sys.stderr with its proxy by now
    try:
        yield
    finally:
        for handler, stream in zip(handlers, streams, strict=True):
            handler.setStream(stream)


class ProgressView:
    """Polls ``compute()`` every ``interval`` s and shows it until stopped."""

    def __init__(
        self,
        compute: Callable[[], ProgressInfo],
        *,
        title: str,
        interval: float = 2.0,
        live: bool | None = None,
    ) -> None:
        self._compute = compute
        self._title = title
        self._interval = interval
        self._live = sys.stdout.isatty() if live is None else live
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tlbench-progress", daemon=True)
        self._last_line = ""
        self._last_print = 0.0

    def _run(self) -> None:
        if self._live:
            with Live(console=Console(), refresh_per_second=1, transient=False) as live, _logs_above(live):
                while not self._stop.wait(self._interval):
                    self._safe(lambda info: live.update(render_table(info, self._title)))
                self._safe(lambda info: live.update(render_table(info, self._title)))
            return
        while not self._stop.wait(self._interval):
            self._safe(self._print_line)

    def _safe(self, show: Callable[[ProgressInfo], None]) -> None:
        try:
            show(self._compute())
        except Exception as exc:  # the view must never take the sweep down
            log.debug("progress view: %s", exc)

    def _print_line(self, info: ProgressInfo) -> None:
        line = render_line(info)
        changed = line.split(" | elapsed")[0] != self._last_line.split(" | elapsed")[0]
        if changed or time.monotonic() - self._last_print > 60:
            print(f"[{self._title}] {line}", flush=True)
            self._last_line, self._last_print = line, time.monotonic()

    def __enter__(self) -> ProgressView:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if not self._live:
            self._safe(self._print_line)
