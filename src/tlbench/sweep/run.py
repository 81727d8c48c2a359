"""The sweep's one entry point: :func:`run_sweep`, from a parsed command line to a finished study.

Definition (the file plus the command line) -> check against the config tree -> the study's plan
(each cell composed once) and threads x workers from the free cores -> open the study and its
parent run -> work here or supervise worker processes, with a live progress view -> close, print
where the study stands -> on a complete study, the report and the exported winner.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType

from tlbench.cost.threads import ThreadPlan, auto_workers, plan_threads
from tlbench.sweep.cells import expand_cells, tuning_budget, tuning_cell
from tlbench.sweep.check import check_against_config, first_cell_config
from tlbench.sweep.estimate import (
    ETA_LOG,
    WorkItem,
    countdown,
    data_counts,
    format_plan,
    log_eta,
    measure_throughputs,
    plan_seconds,
    trial_states,
    work_items,
)
from tlbench.sweep.liveness import Heartbeat
from tlbench.sweep.loader import sweep_path
from tlbench.sweep.meta import StudyContext
from tlbench.sweep.pareto import format_pareto
from tlbench.sweep.progress import ProgressInfo, format_duration, progress_info, read_trials
from tlbench.sweep.request import SweepRequest, check_request, load_spec
from tlbench.sweep.screen_phase import run_screen_phase, with_backbones
from tlbench.sweep.session import SweepOutcome, close, log_dir, open_for_command, work
from tlbench.sweep.storage import StorageRef, check_study_name, open_storage, resolve_storage
from tlbench.sweep.summary import cell_results, format_results
from tlbench.sweep.timing import format_breakdown, time_breakdown
from tlbench.sweep.view import ProgressView, render_line
from tlbench.sweep.workers import STORAGE_ENV, spawn, supervisor_gone, wait
from tlbench.tracking import check_reachable
from tlbench.tracking.runs import redact_password

log = logging.getLogger(__name__)

# Per-epoch and per-trial INFO lines from the training stack would drown the progress view.
_QUIET = ("tlbench.models", "tlbench.run", "tlbench.training", "tlbench.data", "tlbench.cost", "optuna")


def run_sweep(request: SweepRequest) -> int:
    """Run or resume the study; returns the exit status (0 complete, 1 not complete, 130 interrupted)."""
    check_request(request)
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
        ctx = open_for_command(spec, study, ref, tracking_uri=tracking_uri)
        _screen(ctx, progress=lambda line: log.info("%s", line))
        return _run_worker(request, ctx, started)
    workers, why = _workers(request.workers, first.trainer.device)
    threads = plan_threads(workers)
    ctx = open_for_command(spec, study, ref, tracking_uri=tracking_uri)
    _print_header(ctx, workers, threads, why)
    with _closed_on_error(ctx, started, workers):
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

    with _closed_on_error(ctx, started, workers), ProgressView(compute, title=f"study {study}"):
        if workers == 1:
            _set_threads(threads.threads)
            interrupted = work(ctx, offset=_offset(ref, 0), workers=1)
        else:
            interrupted = _supervise(
                ctx,
                sweep=str(sweep_path(request.sweep_name).resolve()),
                storage=storage,
                threads=threads.threads,
                n=workers,
                extra=request.forwarded(),
            )
    outcome = close(ctx, interrupted=interrupted, started=started, workers=workers)
    eta_log.record(outcome.progress, final=True)
    _print_outcome(ctx, outcome)
    if outcome.interrupted:
        return 130
    if not outcome.complete:
        return 1
    if spec.report:
        _build_report(outcome.study)
    if spec.exports:
        return _export_winner(ctx, tracking_uri=tracking_uri)
    return 0


def _screen(ctx: StudyContext, *, progress: Callable[[str], None]) -> None:
    """The screen phase (``screen:`` in the sweep file): from here on, only the kept backbones' cells."""
    if ctx.spec.screen is not None:
        ctx.narrow(with_backbones(ctx.spec, run_screen_phase(ctx, progress=progress)))


class Eta:
    """Logs the live ETA with its time (at most every ``every_s``), for :func:`estimate.eta_errors`."""

    def __init__(self, path: Path, *, every_s: float = 30.0) -> None:
        self.path = path
        self.every_s = every_s
        self._last = -math.inf

    def record(self, info: ProgressInfo, *, final: bool = False) -> None:
        if not final and time.monotonic() - self._last < self.every_s:
            return
        self._last = time.monotonic()
        done = sum(p.complete + p.pruned + p.failed for p in info.phases)
        planned = sum(p.planned for p in info.phases)
        with contextlib.suppress(OSError):  # a log that cannot be written must not stop the sweep
            log_eta(
                self.path, elapsed_s=info.elapsed_s, eta_s=info.eta_s, done=done, planned=planned, final=final
            )


def _print_plan(ctx: StudyContext, *, workers: int, threads: int) -> list[WorkItem]:
    """The plan before the first trial: trials per phase and their device time from a measured probe.

    The estimate is a convenience: if it cannot be made (a backbone timm cannot build offline, ...),
    the sweep runs without it and says why.
    """
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
        format_plan(ctx.plan.phases, plan_seconds(items), first, workers=workers, race_extra=extra),
        flush=True,
    )
    return items


def _run_worker(request: SweepRequest, ctx: StudyContext, started: float) -> int:
    # The supervisor stops workers with one SIGINT; make sure it is not inherited as ignored
    # (as it is for background jobs of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _set_threads(request.threads or 1)
    workers = request.workers or 1  # a spawned worker is always told the count
    with _closed_on_error(ctx, started, workers):
        interrupted = work(
            ctx,
            offset=_offset(ctx.storage_ref, request.worker_index),
            workers=workers,
            stop_when=supervisor_gone,
        )
    close(ctx, interrupted=interrupted, started=started, workers=workers)
    return 130 if interrupted else 0


def _set_threads(threads: int) -> None:
    """torch's intra-op threads for every trial of this process (a trial's trainer.num_threads wins)."""
    import torch

    torch.set_num_threads(threads)


def _build_report(study: str) -> None:
    from tlbench.cli import print_result
    from tlbench.report.build import build_report  # pandas/matplotlib only when a report is due

    print("building the report ...", flush=True)
    print_result(build_report(study, progress=lambda message: print(f"report: {message}", flush=True)))


EXPORTED_ATTR = "exported_model"  # meta study: the model a completed study exported (done once)


def _export_winner(ctx: StudyContext, *, tracking_uri: str) -> int:
    """The report's recommended arm, retrained on train + validation and registered (``export: true``).

    Once per study: running the command again on a complete study does not retrain it. The study is
    complete whatever happens here; a failed export says so in one line and how to retry it, and
    the command exits 1.
    """
    study = ctx.names.study
    done = ctx.meta.user_attrs.get(EXPORTED_ATTR)
    if done:
        print(f"export: already done ({done}); tlbench export --study {study} exports it again", flush=True)
        return 0
    try:
        from tlbench.export import export_winner
    except ImportError:  # a version without the export module: the study stands on its own
        print("export: skipped (this version of tlbench has no tlbench.export)", flush=True)
        return 0
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
def _closed_on_error(ctx: StudyContext, started: float, workers: int) -> Iterator[None]:
    """A crash of the sweep itself (a bug, the tracking store gone) still closes the study's runs."""
    try:
        yield
    except Exception:
        with contextlib.suppress(Exception):  # the original error is the one to report
            close(ctx, interrupted=True, started=started, workers=workers)
        raise


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _offset(ref: StorageRef, index: int) -> int:
    """Where in the cell list this worker starts: spread local workers by index; machines sharing a
    database cannot know each other's index, so there the pid spreads them."""
    return os.getpid() if ref.multi_machine else index


def _supervise(
    ctx: StudyContext, *, sweep: str, storage: str | None, threads: int, n: int, extra: Sequence[str] = ()
) -> bool:
    logs = log_dir(ctx.names.study)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill <supervisor>` stops workers cleanly too
    procs = spawn(sweep, ctx.names.study, n, storage=storage, threads=threads, log_dir=logs, extra=extra)
    print(f"{n} workers (pids {', '.join(str(p.pid) for p in procs)}), logs in {logs}/", flush=True)
    try:
        with Heartbeat(ctx.beat):
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
    from tlbench.cost.device import resolve_device  # imports torch: the supervisor needs it anyway

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


def _print_outcome(ctx: StudyContext, outcome: SweepOutcome) -> None:
    print(render_line(outcome.progress))
    if ctx.spec.mode == "pareto":
        print(format_pareto(outcome.pareto) if outcome.complete else "Pareto set: study not complete yet")
    else:
        cells = expand_cells(ctx.spec)
        tune = {c.key: ctx.study(ctx.names.cell(c.key)).get_trials(deepcopy=False) for c in cells}
        finals = ctx.study(ctx.names.final).get_trials(deepcopy=False) if ctx.spec.has_finals else []
        budgets = {c.key: tuning_budget(ctx.spec, c) for c in cells}
        sources = {c.key: tuning_cell(ctx.spec, c).key for c in cells}
        print(format_results(cell_results(tune, finals, budgets=budgets, sources=sources)))
    trials = read_trials(ctx.storage, ctx.spec, ctx.names)
    print(format_breakdown(time_breakdown(trials), total_s=outcome.progress.elapsed_s))
    took = format_duration(outcome.progress.elapsed_s)
    if outcome.complete:
        print(f"study '{outcome.study}' complete in {took}; report: make report STUDY={outcome.study}")
    elif outcome.interrupted:
        print(f"study '{outcome.study}' interrupted after {took}; run the same command again to resume it")
    else:
        print(f"study '{outcome.study}' not complete (other workers still running?); rerun to resume")
