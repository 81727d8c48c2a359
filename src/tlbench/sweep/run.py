"""``run_sweep``: the sweep's one entry point (supervisor, local worker processes, live progress, the
closing summary, report and export)."""

from __future__ import annotations

import contextlib
import datetime
import gc
import json
import logging
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from tlbench.sweep.plan import (
    CELL,
    COLLAPSED,
    ETA_LOG,
    NOT_RUN,
    STRATEGY,
    WorkItem,
    best_trial,
    check_against_config,
    countdown,
    data_counts,
    expand_cells,
    fail_kind,
    first_cell_config,
    format_plan,
    is_counted,
    measure_throughputs,
    trial_states,
    tuning_budget,
    tuning_cell,
    wall_seconds,
    work_items,
)
from tlbench.sweep.screen_phase import run_screen_phase, with_backbones
from tlbench.sweep.spec import (
    SweepRequest,
    SweepSpec,
    derive_sizes,
    has_auto_sizes,
    load_sweep,
    spec_as_dict,
    sweep_path,
    with_overrides,
    with_photo_folder,
    with_sizes,
)
from tlbench.sweep.study import (
    STORAGE_ENV,
    StorageRef,
    StudyContext,
    StudyNames,
    check_study_name,
    close_orphan_runs,
    heartbeat,
    open_storage,
    open_study,
    reap,
    resolve_storage,
)
from tlbench.sweep.worker import Pareto, ParetoPoint, TuneThenFinal, format_pareto
from tlbench.tracking import check_reachable, names
from tlbench.tracking.runs import redact_password
from tlbench.training.threads import ThreadPlan, auto_workers, plan_threads

log = logging.getLogger(__name__)


# --- progress ---
# What the live view shows, computed (not drawn) from the stored trials: counts, best, ETA.
@dataclass(frozen=True)
class PhaseCounts:
    name: str  # tune | final | pareto
    planned: int
    complete: int = 0
    pruned: int = 0
    failed: int = 0  # counted failures (diverged, collapsed, impossible configuration)
    collapsed: int = 0  # of those, trained but degenerate (at chance): a failed configuration
    redone: int = 0  # failures that are redone: worker died, crashed, interrupted
    running: int = 0
    mean_s: float | None = None  # mean duration of its finished trials

    @property
    def remaining(self) -> int:
        return max(0, self.planned - self.complete - self.pruned - self.failed)


@dataclass(frozen=True)
class ProgressInfo:
    phases: tuple[PhaseCounts, ...]
    best: dict[str, float]  # strategy -> best tuning val/acc so far
    elapsed_s: float
    eta_s: float | None


def phase_counts(name: str, planned: int, trials: Sequence[FrozenTrial]) -> PhaseCounts:
    ran = [t for t in trials if fail_kind(t) not in NOT_RUN]
    durations = [d for t in ran if is_counted(t) and (d := wall_seconds(t)) is not None]
    waiting = sum(1 for t in ran if t.state == TrialState.WAITING)
    return PhaseCounts(
        name=name,
        planned=max(planned, sum(1 for t in ran if is_counted(t) or t.state == TrialState.RUNNING) + waiting),
        complete=sum(1 for t in ran if t.state == TrialState.COMPLETE),
        pruned=sum(1 for t in ran if t.state == TrialState.PRUNED),
        failed=sum(1 for t in ran if t.state == TrialState.FAIL and is_counted(t)),
        collapsed=sum(1 for t in ran if fail_kind(t) == COLLAPSED),
        redone=sum(1 for t in ran if t.state == TrialState.FAIL and not is_counted(t)),
        running=sum(1 for t in ran if t.state == TrialState.RUNNING),
        mean_s=sum(durations) / len(durations) if durations else None,
    )


def progress_info(
    trials_by_phase: Mapping[str, Sequence[FrozenTrial]],
    planned: Mapping[str, int],
    *,
    elapsed_s: float,
    workers: int = 1,
) -> ProgressInfo:
    """Counts per phase, best tuning val/acc per strategy, ETA = remaining x mean duration / workers."""
    phases = tuple(phase_counts(name, planned[name], trials_by_phase.get(name, ())) for name in planned)
    best: dict[str, float] = {}
    for phase in ("tune", "pareto"):
        for t in trials_by_phase.get(phase, ()):
            if t.state == TrialState.COMPLETE and t.values:
                strategy = str(t.user_attrs.get(STRATEGY, "?"))
                best[strategy] = max(best.get(strategy, 0.0), float(t.values[0]))
    known = [p.mean_s for p in phases if p.mean_s is not None]
    eta = None
    if known:
        fallback = sum(known) / len(known)
        seconds = sum(p.remaining * (p.mean_s if p.mean_s is not None else fallback) for p in phases)
        eta = seconds / max(1, workers)
    return ProgressInfo(phases=phases, best=dict(sorted(best.items())), elapsed_s=elapsed_s, eta_s=eta)


def read_trials(
    storage: optuna.storages.BaseStorage, spec: SweepSpec, names: StudyNames
) -> dict[str, list[FrozenTrial]]:
    """All trials of the study, grouped by phase; studies not created yet count as empty."""
    if spec.mode == "pareto":
        wanted = {names.pareto: "pareto"}
    else:
        wanted = {names.cell(c.key): "tune" for c in expand_cells(spec)}
        wanted[names.budget_check] = "check"
        wanted[names.final] = "final"
    grouped: dict[str, list[FrozenTrial]] = {}
    for study_name, phase in wanted.items():
        try:
            study_id = storage.get_study_id_from_name(study_name)
        except KeyError:
            continue
        grouped.setdefault(phase, []).extend(storage.get_all_trials(study_id, deepcopy=False))
    return grouped


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


# --- view ---
# A ``rich`` live table on a terminal, plain log lines elsewhere (CI logs), from a background thread on
# its own storage connection: the view and the training never wait on each other.


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


# --- timing ---
# Trial wall time runs from the claim to the ``tell``; fit time is the trial's ``cost/fit_seconds``;
# whatever the sweep's wall time exceeds their sum is start-up and coordination.
@dataclass(frozen=True)
class TimeRow:
    phase: str
    strategy: str
    trials: int
    wall_s: float
    fit_s: float


def time_breakdown(trials_by_phase: Mapping[str, Sequence[FrozenTrial]]) -> list[TimeRow]:
    rows: dict[tuple[str, str], list[float]] = {}
    for phase, trials in trials_by_phase.items():
        for t in trials:
            if t.datetime_complete is None or fail_kind(t) in NOT_RUN:
                continue
            key = (phase, str(t.user_attrs.get(STRATEGY, "?")))
            acc = rows.setdefault(key, [0, 0.0, 0.0])
            acc[0] += 1
            acc[1] += wall_seconds(t) or 0.0
            acc[2] += float(t.user_attrs.get("cost_fit_seconds", 0.0))
    return [TimeRow(p, s, int(n), wall, fit) for (p, s), (n, wall, fit) in sorted(rows.items())]


def format_breakdown(rows: Sequence[TimeRow], *, total_s: float | None = None) -> str:
    lines = ["where the time went (trial wall = claim to result; fit = training incl. validation):"]
    lines.append(f"  {'phase':<7} {'strategy':<14} {'trials':>6} {'trial wall s':>12} {'fit s':>8}")
    for r in rows:
        lines.append(f"  {r.phase:<7} {r.strategy:<14} {r.trials:>6} {r.wall_s:>12.1f} {r.fit_s:>8.1f}")
    wall, fit = sum(r.wall_s for r in rows), sum(r.fit_s for r in rows)
    lines.append(f"  {'all':<22} {sum(r.trials for r in rows):>6} {wall:>12.1f} {fit:>8.1f}")
    if total_s is not None:
        lines.append(f"  this command's wall time {total_s:.1f} s (start-up and coordination: the rest)")
    return "\n".join(lines)


# --- summary ---
# The end-of-sweep table: per cell, the tuning budget used, the chosen configuration, final test accuracy.
@dataclass(frozen=True)
class CellResult:
    cell: str
    counted: int  # tuning trials that count toward the budget
    budget: int  # the cell's tuning budget (0: not tuned, e.g. as_is)
    collapsed: int  # tuning and final trials at chance: failed configurations, never selected
    best_trial: int | None
    best_val: float | None
    best_params: dict[str, object]
    final_test: tuple[float, ...]  # test/acc of the final runs that did not collapse (the reported numbers)
    tuned_in: str | None = None  # budget.tune_at: the cell whose tuning chose this configuration

    @property
    def test_mean(self) -> float | None:
        return statistics.fmean(self.final_test) if self.final_test else None

    @property
    def test_std(self) -> float | None:
        return statistics.stdev(self.final_test) if len(self.final_test) > 1 else None


def cell_results(
    tune_trials: Mapping[str, Sequence[FrozenTrial]],
    final_trials: Sequence[FrozenTrial],
    *,
    budgets: Mapping[str, int],
    sources: Mapping[str, str] | None = None,
) -> list[CellResult]:
    """``tune_trials``: cell key -> the trials of its study; ``budgets``: cell key -> its tuning budget;
    ``sources``: cell key -> the cell whose tuning chose its configuration (``budget.tune_at``)."""
    results = []
    for cell, trials in tune_trials.items():
        source = (sources or {}).get(cell, cell)
        best = best_trial(tune_trials.get(source, trials))
        finals = [t for t in final_trials if t.user_attrs.get(CELL) == cell]
        tests = [
            float(t.user_attrs["test_acc"])
            for t in finals
            if is_counted(t)
            and fail_kind(t) != COLLAPSED  # a failure, counted below, never a number (as in the report)
            and "test_acc" in t.user_attrs
        ]
        results.append(
            CellResult(
                cell=cell,
                counted=sum(1 for t in trials if is_counted(t)),
                budget=budgets[cell],
                collapsed=sum(1 for t in [*trials, *finals] if fail_kind(t) == COLLAPSED),
                best_trial=best.number if best else None,
                best_val=float(best.value) if best and best.value is not None else None,
                best_params=dict(best.params) if best else {},
                final_test=tuple(tests),
                tuned_in=source if source != cell else None,
            )
        )
    return results


def _fmt(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def format_results(results: Sequence[CellResult]) -> str:
    width = max((len(r.cell) for r in results), default=4)
    lines = [f"{'cell':<{width}}  tuned  best val/acc  final test/acc (mean ± sd, n)  chosen"]
    for r in results:
        val = f"{r.best_val:.4f} (#{r.best_trial})" if r.best_val is not None else "—"
        test = "—"
        if r.test_mean is not None:
            sd = f" ± {r.test_std:.4f}" if r.test_std is not None else ""
            test = f"{r.test_mean:.4f}{sd}, n={len(r.final_test)}"
        chosen = ", ".join(f"{k}={_fmt(v)}" for k, v in r.best_params.items())
        if r.tuned_in:
            chosen += f"  (tuned at {r.tuned_in})"
        if r.collapsed:
            chosen += f"  ({r.collapsed} collapsed: failed, never selected)"
        tuned = f"{r.counted}/{r.budget:<3}" if r.budget else "—    "
        lines.append(f"{r.cell:<{width}}  {tuned}  {val:<12}  {test:<30}  {chosen}")
    return "\n".join(lines)


# --- workers ---
# Each worker is ``python -m tlbench.cli sweep … --worker`` in its own session: a terminal's Ctrl-C
# reaches only the supervisor, which sends each worker exactly one SIGINT (a second could interrupt it
# while it records its trial). The storage URL travels in the environment (``ps`` shows arguments). A
# worker whose supervisor disappears (``kill -9``) finishes its current trial and stops.
SUPERVISOR_ENV = "TLBENCH_SWEEP_SUPERVISOR"  # the supervisor's pid, so a worker notices it is orphaned


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


# --- session ---
# Closing decides the parent run's state: FINISHED once the study is complete; else, if no other worker
# is alive, KILLED with ``status=interrupted`` (a rerun resumes it); else left to the last worker out.
Loop = TuneThenFinal | Pareto


def parent_params(spec: SweepSpec, ref: StorageRef) -> dict[str, Any]:
    """The parent run's params: a summary of the sweep definition (the full one is ``sweep.yaml``)."""
    plain = spec_as_dict(spec)
    return {
        "sweep": spec.name,
        "mode": spec.mode,
        "description": spec.description[:500],
        "base": " ".join(spec.base),
        "factors": json.dumps(plain["factors"]),
        "search": json.dumps(plain["search"]),
        "search_where": json.dumps(plain["search_where"]),
        "n_cells": len(expand_cells(spec)),
        "trials_per_cell": spec.budget.trials_per_cell,
        "final_seeds": ",".join(str(s) for s in spec.final_seeds),
        "tune_seed": spec.tune_seed,
        "sampler": json.dumps(plain["sampler"]),
        "pruner": json.dumps(plain["pruner"]),
        "storage": ref.display,
    }


def open_for_command(
    spec: SweepSpec, study: str, ref: StorageRef, *, tracking_uri: str | None
) -> StudyContext:
    ctx = open_study(spec, study, ref, tracking_uri=tracking_uri, params=parent_params(spec, ref))
    ctx.runs.set_state(ctx.parent_run_id, "RUNNING", tags={names.STATUS: names.RUNNING})
    return ctx


def make_loop(ctx: StudyContext, *, offset: int = 0, workers: int = 1) -> Loop:
    if ctx.spec.mode == "pareto":
        return Pareto(ctx, workers=workers)
    return TuneThenFinal(ctx, offset=offset, workers=workers)


def work(ctx: StudyContext, *, index: int = 0, workers: int = 1, stop_when: Any = None) -> bool:
    """Run the worker loop here until the study has no work left; returns True if interrupted."""
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops cleanly too
    # where in the cell list this worker starts: local workers by index; machines sharing a database
    # cannot know each other's index, so there the pid spreads them
    offset = os.getpid() if ctx.storage_ref.multi_machine else index
    loop = make_loop(ctx, offset=offset, workers=workers)
    gc.collect()
    gc.freeze()  # the long-lived imports and clients: the per-trial collection then skips them
    try:
        with heartbeat(ctx.beat):
            loop.run(should_stop=stop_when or (lambda: False))
        return False
    except KeyboardInterrupt:
        return True
    finally:
        signal.signal(signal.SIGTERM, previous)


def close(ctx: StudyContext, *, interrupted: bool) -> tuple[bool, list[ParetoPoint]]:
    """Reap, end orphaned runs, decide the parent run's state; returns whether the study is complete
    and, for a complete Pareto study, its published set."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # recording the end must not be cut short
    try:
        loop = make_loop(ctx)
        reap(ctx, loop.study_names)
        close_orphan_runs(ctx)
        complete = loop.complete()
        if isinstance(loop, TuneThenFinal):
            loop.publish_race()  # the race as it stands, also when interrupted
        ctx.beat("exited")  # before looking at the others: the last worker out always closes the run
        points: list[ParetoPoint] = []
        if complete:
            if isinstance(loop, Pareto):
                points = loop.publish()
            ctx.runs.set_state(ctx.parent_run_id, "FINISHED", tags={names.STATUS: names.COMPLETED})
        elif not ctx.other_live_workers():
            ctx.runs.set_state(ctx.parent_run_id, "KILLED", tags={names.STATUS: names.INTERRUPTED})
        else:
            log.info(
                "other workers are still on study '%s'; the last one out closes its parent run",
                ctx.names.study,
            )
        return complete, points
    finally:
        signal.signal(signal.SIGINT, previous)


def log_dir(study: str) -> Path:
    return Path(".tlbench") / "logs" / study


# --- run ---
# Per-epoch and per-trial INFO lines from the training stack would drown the progress view.
_QUIET = ("tlbench.run", "tlbench.training", "tlbench.data", "optuna")


def load_spec(request: SweepRequest, *, announce: bool = True) -> SweepSpec:
    """The sweep file plus the command line: overrides, the photo folder and class map, data sizes."""
    spec = with_overrides(load_sweep(request.sweep_name), request.overrides)
    if request.data:
        root = Path(request.data).expanduser().resolve()
        spec = with_photo_folder(spec, str(root), request.class_map)
    if has_auto_sizes(spec):
        counts = data_counts(spec)  # decodes the data: only when sizes depend on it
        smallest, where = min(counts.pool_per_class), counts.where
        sizes = derive_sizes(smallest)
        spec = with_sizes(spec, sizes)
        if announce:
            shown = ", ".join("all" if n is None else str(n) for n in sizes)
            print(f"data sizes: {shown} per class (the smallest class of {where} has {smallest} "
                  "training images)", flush=True)  # fmt: skip
    return spec


def run_sweep(request: SweepRequest) -> int:
    """Run or resume the study; returns the exit status (0 complete, 1 not complete, 130 interrupted).
    ``request`` was checked by the command (:func:`tlbench.sweep.spec.check_request`)."""
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    spec = load_spec(request, announce=not request.worker)
    study = check_study_name(request.study or spec.name)
    storage = request.storage or os.environ.get(STORAGE_ENV) or None
    ref = resolve_storage(storage, study)
    # Workers skip the full check (their supervisor ran it) but compose one cell for the tracking URI.
    first = first_cell_config(spec) if request.worker else check_against_config(spec)
    tracking_uri = check_reachable(first.tracking.tracking_uri)  # before any study or run is touched
    started = time.monotonic()
    if request.worker:
        return _run_worker(request, open_for_command(spec, study, ref, tracking_uri=tracking_uri))
    workers, why = _workers(request.workers, first.trainer.device)
    threads = plan_threads(workers)
    ctx = open_for_command(spec, study, ref, tracking_uri=tracking_uri)
    _print_header(ctx, workers, threads, why)
    with _closed_on_error(ctx):
        _screen(ctx, progress=lambda line: print(line, flush=True))
    items = _print_plan(ctx, workers=workers, threads=threads.threads)
    view_storage = open_storage(ref)  # the view polls on its own connection
    eta_log = Eta(log_dir(study) / ETA_LOG)

    def compute() -> ProgressInfo:
        trials = read_trials(view_storage, spec, ctx.names)
        info = progress_info(trials, ctx.plan.phases, elapsed_s=time.monotonic() - started, workers=workers)
        if items:
            finished, running = trial_states(trials, now=datetime.datetime.now())
            info = replace(info, eta_s=countdown(items, finished, running, workers=workers))
        eta_log.record(info)
        return info

    with _closed_on_error(ctx), ProgressView(compute, title=f"study {study}"):
        if workers == 1:
            _set_threads(threads.threads)
            interrupted = work(ctx, index=0, workers=1)
        else:
            interrupted = _supervise(ctx, request, storage=storage, threads=threads.threads, n=workers)
    complete, points = close(ctx, interrupted=interrupted)
    trials = read_trials(ctx.storage, ctx.spec, ctx.names)
    progress = progress_info(trials, ctx.plan.phases, elapsed_s=time.monotonic() - started, workers=workers)
    eta_log.record(progress, final=True)
    _print_outcome(ctx, trials, progress, complete=complete, interrupted=interrupted, pareto=points)
    if interrupted:
        return 130
    if not complete:
        return 1
    if spec.report:
        _build_report(study)
    if spec.exports:
        return _export_winner(ctx, tracking_uri=tracking_uri)
    return 0


def _screen(ctx: StudyContext, *, progress: Callable[[str], None]) -> None:
    """The screen phase (``screen:`` in the sweep file): from here on, only the kept backbones' cells."""
    if ctx.spec.screen is not None:
        ctx.narrow(with_backbones(ctx.spec, run_screen_phase(ctx, progress=progress)))


class Eta:
    """Logs the live ETA with its time (at most every ``every_s``), for :func:`plan.eta_errors`."""

    def __init__(self, path: Path, *, every_s: float = 30.0) -> None:
        self.path = path
        self.every_s = every_s
        self._last = -math.inf

    def record(self, info: ProgressInfo, *, final: bool = False) -> None:
        if not final and time.monotonic() - self._last < self.every_s:
            return
        self._last = time.monotonic()
        record = {
            "time": time.time(),
            "elapsed_s": round(info.elapsed_s, 1),
            "eta_s": info.eta_s,
            "done": sum(p.complete + p.pruned + p.failed for p in info.phases),
            "planned": sum(p.planned for p in info.phases),
            "final": final,
        }
        with contextlib.suppress(OSError):  # a log that cannot be written must not stop the sweep
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as out:
                out.write(json.dumps(record) + "\n")


def _print_plan(ctx: StudyContext, *, workers: int, threads: int) -> list[WorkItem]:
    """The plan before the first trial: trials per phase and their device time from a measured probe
    (a convenience: where it cannot be made, the sweep runs without it and says why)."""
    race = ctx.spec.race
    extra = (race.cap - len(ctx.spec.final_seeds)) * len(ctx.plan.cells) if race is not None else 0
    try:
        counts = data_counts(ctx.spec)
        throughput = measure_throughputs(ctx.plan, num_classes=len(counts.pool_per_class), threads=threads)
        items = work_items(ctx.spec, ctx.plan, counts, throughput)
    except Exception as exc:  # the estimate never stops a sweep
        log.debug("no estimate", exc_info=True)
        plan = format_plan(ctx.plan.phases, None, None, workers=workers, race_extra=extra)
        print(f"{plan} (no time estimate: {exc})", flush=True)
        return []
    first = next(iter(throughput.values()), None)
    print(
        format_plan(
            ctx.plan.phases, sum(i.count * i.seconds for i in items), first, workers=workers, race_extra=extra
        ),
        flush=True,
    )
    return items


def _run_worker(request: SweepRequest, ctx: StudyContext) -> int:
    _screen(ctx, progress=lambda line: log.info("%s", line))
    # The supervisor stops workers with one SIGINT; make sure it is not inherited as ignored
    # (as it is for background jobs of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _set_threads(request.threads or 1)
    workers = request.workers or 1  # a spawned worker is always told the count
    with _closed_on_error(ctx):
        interrupted = work(ctx, index=request.worker_index, workers=workers, stop_when=supervisor_gone)
    close(ctx, interrupted=interrupted)
    return 130 if interrupted else 0


def _set_threads(threads: int) -> None:
    """torch's intra-op threads for every trial of this process (a trial's trainer.num_threads wins)."""
    import torch

    torch.set_num_threads(threads)


def _build_report(study: str) -> None:
    from tlbench.report.build import build_report, print_result  # pandas/matplotlib only when a report is due

    print("building the report ...", flush=True)
    print_result(build_report(study, progress=lambda message: print(f"report: {message}", flush=True)))


EXPORTED_ATTR = "exported_model"  # meta study: the model a completed study exported (done once)


def _export_winner(ctx: StudyContext, *, tracking_uri: str) -> int:
    """The report's recommended arm, retrained on train + validation and registered (``export: true``),
    once per study. The study is complete whatever happens here; a failed export says so in one line
    with how to retry it, and the command exits 1."""
    study = ctx.names.study
    done = ctx.meta.user_attrs.get(EXPORTED_ATTR)
    if done:
        print(f"export: already done ({done}); tlbench export --study {study} exports it again", flush=True)
        return 0
    from tlbench.export import export_winner

    try:
        exported = export_winner(study, tracking_uri=tracking_uri, progress=lambda m: print(m, flush=True))
    except Exception as exc:  # the study's results are all recorded: say what failed, never a traceback
        log.debug("export failed", exc_info=True)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"export: failed: {first} (the study is complete; retry: tlbench export --study {study})")
        return 1
    uri = str(getattr(exported, "model_uri", exported))
    ctx.meta.set_user_attr(EXPORTED_ATTR, uri)
    print(f"export: registered {uri}", flush=True)
    return 0


@contextlib.contextmanager
def _closed_on_error(ctx: StudyContext) -> Iterator[None]:
    """A crash of the sweep itself (a bug, the tracking store gone) still closes the study's runs."""
    try:
        yield
    except Exception:
        with contextlib.suppress(Exception):  # the original error is the one to report
            close(ctx, interrupted=True)
        raise


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _supervise(
    ctx: StudyContext, request: SweepRequest, *, storage: str | None, threads: int, n: int
) -> bool:
    sweep = str(sweep_path(request.sweep_name).resolve())
    logs = log_dir(ctx.names.study)
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, SUPERVISOR_ENV: str(os.getpid())}
    if storage:
        env[STORAGE_ENV] = storage
    command = [sys.executable, "-m", "tlbench.cli", "sweep", "--sweep", sweep, "--study", ctx.names.study,
               "--workers", str(n), "--threads", str(threads)]  # fmt: skip
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill <supervisor>` stops workers cleanly too
    procs = []
    for index in range(n):
        with (logs / f"worker-{index}.log").open("ab") as out:
            procs.append(
                subprocess.Popen(
                    [*command, "--worker-index", str(index), "--worker", *request.forwarded()],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
            )
    print(f"{n} workers (pids {', '.join(str(p.pid) for p in procs)}), logs in {logs}/", flush=True)
    try:
        with heartbeat(ctx.beat):
            codes = wait(procs)
    except KeyboardInterrupt:
        return True
    finally:
        signal.signal(signal.SIGTERM, previous)
    failed = [i for i, code in enumerate(codes) if code not in (0, 130)]
    for index in failed:
        print(f"worker {index} exited with status {codes[index]}: see {logs}/worker-{index}.log", flush=True)
    return any(code == 130 for code in codes)


def _workers(requested: int | None, device: str) -> tuple[int, str]:
    """The worker count and why: ``--workers N``, or ``auto`` (:func:`auto_workers`)."""
    if requested is not None:
        return requested, "--workers"
    from tlbench.training.device import resolve_device  # imports torch: the supervisor needs it anyway

    return auto_workers(gpu=resolve_device(device).is_gpu)


def _print_header(ctx: StudyContext, workers: int, threads: ThreadPlan, why: str) -> None:
    """Where the study lives and how it runs (threads x workers, and why)."""
    print(
        f"study '{ctx.names.study}' (sweep '{ctx.spec.name}', {ctx.spec.mode}), {workers} worker(s): {why}\n"
        f"  threads: {threads.summary}\n"
        f"  Optuna storage: {ctx.storage_ref.display}\n"
        f"  MLflow: experiment '{ctx.names.study}' at {redact_password(ctx.runs.tracking_uri)}, "
        f"parent run {ctx.parent_run_id}",
        flush=True,
    )


def _print_outcome(
    ctx: StudyContext,
    trials: Mapping[str, Sequence[FrozenTrial]],
    progress: ProgressInfo,
    *,
    complete: bool,
    interrupted: bool,
    pareto: list[ParetoPoint],
) -> None:
    print(render_line(progress))
    if ctx.spec.mode == "pareto":
        print(format_pareto(pareto) if complete else "Pareto set: study not complete yet")
    else:
        cells = expand_cells(ctx.spec)
        tune = {c.key: ctx.study(ctx.names.cell(c.key)).get_trials(deepcopy=False) for c in cells}
        finals = ctx.study(ctx.names.final).get_trials(deepcopy=False) if ctx.spec.has_finals else []
        budgets = {c.key: tuning_budget(ctx.spec, c) for c in cells}
        sources = {c.key: tuning_cell(ctx.spec, c).key for c in cells}
        print(format_results(cell_results(tune, finals, budgets=budgets, sources=sources)))
    print(format_breakdown(time_breakdown(trials), total_s=progress.elapsed_s))
    study, took = ctx.names.study, format_duration(progress.elapsed_s)
    if complete:
        print(f"study '{study}' complete in {took}; report: make report STUDY={study}")
    elif interrupted:
        print(f"study '{study}' interrupted after {took}; run the same command again to resume it")
    else:
        print(f"study '{study}' not complete (other workers still running?); rerun to resume")
