"""One sweep command on one process: open the study, work on it (or supervise workers), close it.

Closing is where the MLflow parent run's state is decided: FINISHED once the study is complete;
otherwise, if no other worker is still alive, KILLED with ``status=interrupted`` (a later
``make sweep`` resumes the study and sets it back to RUNNING); otherwise left to the last worker out.
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from tlbench.sweep.cells import expand_cells
from tlbench.sweep.liveness import Heartbeat
from tlbench.sweep.loader import spec_as_dict
from tlbench.sweep.meta import StudyContext, open_study
from tlbench.sweep.pareto import Pareto, ParetoPoint
from tlbench.sweep.progress import ProgressInfo, progress_info, read_trials
from tlbench.sweep.reaper import close_orphan_runs, reap
from tlbench.sweep.spec import SweepSpec
from tlbench.sweep.storage import StorageRef
from tlbench.sweep.worker import TuneThenFinal

log = logging.getLogger(__name__)
Loop = TuneThenFinal | Pareto


@dataclass
class SweepOutcome:
    study: str
    complete: bool
    interrupted: bool
    parent_run_id: str
    progress: ProgressInfo
    pareto: list[ParetoPoint] = field(default_factory=list)


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
    ctx.runs.set_state(ctx.parent_run_id, "RUNNING", tags={"status": "running"})
    return ctx


def make_loop(ctx: StudyContext, *, offset: int = 0, workers: int = 1) -> Loop:
    if ctx.spec.mode == "pareto":
        return Pareto(ctx, workers=workers)
    return TuneThenFinal(ctx, offset=offset, workers=workers)


def current_progress(ctx: StudyContext, *, started: float, workers: int) -> ProgressInfo:
    trials = read_trials(ctx.storage, ctx.spec, ctx.names)
    return progress_info(trials, ctx.plan.phases, elapsed_s=time.monotonic() - started, workers=workers)


def _terminate_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def work(ctx: StudyContext, *, offset: int = 0, workers: int = 1, stop_when: Any = None) -> bool:
    """Run the worker loop here until the study has no work left; returns True if interrupted."""
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)  # `kill` stops cleanly too
    loop = make_loop(ctx, offset=offset, workers=workers)
    gc.collect()
    gc.freeze()  # the long-lived imports and clients: the per-trial collection then skips them
    try:
        with Heartbeat(ctx.beat):
            loop.run(should_stop=stop_when or (lambda: False))
        return False
    except KeyboardInterrupt:
        return True
    finally:
        signal.signal(signal.SIGTERM, previous)


def close(ctx: StudyContext, *, interrupted: bool, started: float, workers: int) -> SweepOutcome:
    """Reap, end orphaned runs, decide the parent run's state, and say where the study stands."""
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
            ctx.runs.set_state(ctx.parent_run_id, "FINISHED", tags={"status": "completed"})
        elif not ctx.other_live_workers():
            ctx.runs.set_state(ctx.parent_run_id, "KILLED", tags={"status": "interrupted"})
        else:
            log.info(
                "other workers are still on study '%s'; the last one out closes its parent run",
                ctx.names.study,
            )
        return SweepOutcome(
            study=ctx.names.study,
            complete=complete,
            interrupted=interrupted,
            parent_run_id=ctx.parent_run_id,
            progress=current_progress(ctx, started=started, workers=workers),
            pareto=points,
        )
    finally:
        signal.signal(signal.SIGINT, previous)


def log_dir(study: str) -> Path:
    return Path(".tlbench") / "logs" / study
