"""``tlbench sweep [--sweep NAME | --data FOLDER [--class-map MAP]] [--workers N] [--storage URL]
[--study NAME] [key=value ...]``: run or resume a study; trailing Hydra overrides extend its base."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

from tlbench.errors import ConfigError
from tlbench.redaction import redact_password
from tlbench.sweep.cells import expand_cells, tuning_budget
from tlbench.sweep.check import check_against_config, first_cell_config, smallest_class
from tlbench.sweep.liveness import Heartbeat
from tlbench.sweep.loader import load_sweep, sweep_path
from tlbench.sweep.meta import StudyContext
from tlbench.sweep.overrides import (
    derive_sizes,
    has_auto_sizes,
    with_overrides,
    with_photo_folder,
    with_sizes,
)
from tlbench.sweep.pareto import format_pareto
from tlbench.sweep.progress import (
    ProgressInfo,
    format_duration,
    progress_info,
    read_trials,
)
from tlbench.sweep.session import SweepOutcome, close, log_dir, open_for_command, work
from tlbench.sweep.spec import SweepSpec
from tlbench.sweep.storage import StorageRef, check_study_name, open_storage, resolve_storage
from tlbench.sweep.summary import cell_results, format_results
from tlbench.sweep.timing import format_breakdown, time_breakdown
from tlbench.sweep.view import ProgressView, render_line
from tlbench.sweep.workers import STORAGE_ENV, spawn, supervisor_gone, threads_per_worker, wait
from tlbench.tracking import check_reachable

PHOTO_SWEEP = "photos"  # the protocol --data runs

# Per-epoch and per-trial INFO lines from the training stack would drown the progress view.
_QUIET = ("tlbench.models", "tlbench.run", "tlbench.training", "tlbench.data", "tlbench.cost", "optuna")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tlbench sweep", description=__doc__)
    parser.add_argument(
        "--sweep", default=None, help="a name in sweeps/ or a path to a sweep YAML file (default: default)"
    )
    parser.add_argument(
        "--data",
        default=None,
        help="a folder of your photos (class sub-folders, optionally under train/ + val/ or test/): "
        f"runs the '{PHOTO_SWEEP}' protocol on it unless --sweep names another",
    )
    parser.add_argument(
        "--class-map",
        default=None,
        help="with --data: your classes as ImageNet classes, e.g. '{ants: [ant], bees: [bee]}' "
        "(adds as_is: the pretrained classifier used without training)",
    )
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides appended to the sweep's base, e.g. data.resolution=64"
    )
    parser.add_argument("--study", default=None, help="study name (default: the sweep's name)")
    parser.add_argument("--workers", type=int, default=1, help="local worker processes on the study")
    parser.add_argument("--storage", default=None, help="Optuna storage URL (default: a journal file)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a spawned worker
    parser.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    spec = _spec(args)
    study = check_study_name(args.study or spec.name)
    storage = args.storage or os.environ.get(STORAGE_ENV) or None
    ref = resolve_storage(storage, study)
    # Workers skip the full check (their supervisor ran it) but compose one cell for the tracking URI.
    first = first_cell_config(spec) if args.worker else check_against_config(spec)
    tracking_uri = check_reachable(first.tracking.tracking_uri)  # before any study or run is touched
    started = time.monotonic()
    if args.worker:
        import torch

        # The supervisor stops workers with one SIGINT; make sure it is not inherited as ignored
        # (as it is for background jobs of a non-interactive shell).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        torch.set_num_threads(threads_per_worker(args.workers))
        ctx = open_for_command(spec, study, ref, tracking_uri=tracking_uri)
        with _closed_on_error(ctx, started, args.workers):
            interrupted = work(ctx, offset=_offset(ref, args.worker_index), stop_when=supervisor_gone)
        close(ctx, interrupted=interrupted, started=started, workers=args.workers)
        return 130 if interrupted else 0
    ctx = open_for_command(spec, study, ref, tracking_uri=tracking_uri)
    _print_header(ctx, args.workers)
    view_storage = open_storage(ref)  # the view polls on its own connection

    def compute() -> ProgressInfo:
        trials = read_trials(view_storage, spec, ctx.names)
        return progress_info(
            trials, ctx.plan.phases, elapsed_s=time.monotonic() - started, workers=args.workers
        )

    with _closed_on_error(ctx, started, args.workers), ProgressView(compute, title=f"study {study}"):
        if args.workers == 1:
            interrupted = work(ctx, offset=_offset(ref, 0))
        else:
            interrupted = _supervise(
                ctx,
                sweep=str(sweep_path(_sweep_name(args)).resolve()),
                storage=storage,
                n=args.workers,
                extra=_forwarded(args),
            )
    outcome = close(ctx, interrupted=interrupted, started=started, workers=args.workers)
    _print_outcome(ctx, outcome)
    if outcome.interrupted:
        return 130
    if outcome.complete and spec.report:
        _build_report(outcome.study)
    return 0 if outcome.complete else 1


def _sweep_name(args: argparse.Namespace) -> str:
    return str(args.sweep or (PHOTO_SWEEP if args.data else "default"))


def _forwarded(args: argparse.Namespace) -> list[str]:
    """What a spawned worker needs to rebuild the same definition."""
    out = ["--data", args.data] if args.data else []
    out += ["--class-map", args.class_map] if args.class_map else []
    return [*out, *args.overrides]


def _spec(args: argparse.Namespace) -> SweepSpec:
    """The sweep file plus the command line: overrides, the photo folder and class map, data sizes."""
    if args.class_map and not args.data:
        raise ConfigError("--class-map goes with --data FOLDER (it maps that folder's classes)")
    spec = load_sweep(_sweep_name(args))
    if (
        spec.name == PHOTO_SWEEP
        and not args.data
        and not any(o.startswith("data.root=") for o in args.overrides)
    ):
        raise ConfigError(
            "the photo protocol needs your folder: make sweep DATA=path/to/folder (--data PATH)"
        )
    spec = with_overrides(spec, tuple(args.overrides))
    if args.data:
        root = Path(args.data).expanduser()
        if not root.is_dir():
            raise ConfigError(f"--data {args.data}: no such folder (give a folder of class sub-folders)")
        spec = with_photo_folder(spec, str(root.resolve()), args.class_map)
    if has_auto_sizes(spec):
        smallest, where = smallest_class(spec)
        sizes = derive_sizes(smallest)
        spec = with_sizes(spec, sizes)
        if not args.worker:
            shown = ", ".join("all" if n is None else str(n) for n in sizes)
            print(f"data sizes: {shown} per class (the smallest class of {where} has {smallest} "
                  "training images)", flush=True)  # fmt: skip
    return spec


def _build_report(study: str) -> None:
    from tlbench.commands.report import print_result
    from tlbench.report.build import build_report  # pandas/matplotlib only when a report is due

    print("building the report ...", flush=True)
    print_result(build_report(study, progress=lambda message: print(f"report: {message}", flush=True)))


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
    ctx: StudyContext, *, sweep: str, storage: str | None, n: int, extra: Sequence[str] = ()
) -> bool:
    logs = log_dir(ctx.names.study)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill <supervisor>` stops workers cleanly too
    procs = spawn(sweep, ctx.names.study, n, storage=storage, log_dir=logs, extra=extra)
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


def _print_header(ctx: StudyContext, workers: int) -> None:
    planned = ", ".join(f"{n} {phase}" for phase, n in ctx.plan.phases.items())
    print(
        f"study '{ctx.names.study}' (sweep '{ctx.spec.name}', {ctx.spec.mode}): {planned} trials planned; "
        f"{workers} worker(s)\n  Optuna storage: {ctx.storage_ref.display}\n"
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
        print(format_results(cell_results(tune, finals, budgets=budgets)))
    trials = read_trials(ctx.storage, ctx.spec, ctx.names)
    print(format_breakdown(time_breakdown(trials), total_s=outcome.progress.elapsed_s))
    took = format_duration(outcome.progress.elapsed_s)
    if outcome.complete:
        print(f"study '{outcome.study}' complete in {took}; report: make report STUDY={outcome.study}")
    elif outcome.interrupted:
        print(f"study '{outcome.study}' interrupted after {took}; run the same command again to resume it")
    else:
        print(f"study '{outcome.study}' not complete (other workers still running?); rerun to resume")
