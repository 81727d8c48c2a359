"""Trials whose worker died: mark them failed ("worker died") so their work is redone, end their runs.

Run by every worker before it claims work and by every sweep command before it returns, so a
``kill -9`` leaves nothing RUNNING once any later command on the study has run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import optuna
from optuna.trial import TrialState

from tlbench.sweep import protocol as P
from tlbench.sweep.liveness import WORKER_ATTR
from tlbench.sweep.meta import StudyContext

log = logging.getLogger(__name__)
DIED = "worker died"


def reap(ctx: StudyContext, study_names: Iterable[str]) -> int:
    """FAIL every RUNNING trial of a dead worker (and KILL its MLflow run); returns how many."""
    registry = ctx.registry()
    reaped = 0
    for name in study_names:
        study = ctx.study(name)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if ctx.alive(trial, registry):
                continue
            owner = trial.user_attrs.get(WORKER_ATTR, "unknown worker")
            trial_id = trial._trial_id  # Optuna has no public API to close another process's trial
            try:
                ctx.storage.set_trial_user_attr(trial_id, P.FAIL_KIND, "died")
                ctx.storage.set_trial_user_attr(trial_id, P.FAIL_REASON, f"{DIED} ({owner})")
                ctx.storage.set_trial_user_attr(trial_id, P.STATUS, f"failed: {DIED}")
                ctx.storage.set_trial_state_values(trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # its owner (or another reaper) finished it meanwhile
            kill_trial_runs(ctx, name, trial.number)
            log.warning("%s #%d: %s; its work will be redone", name, trial.number, DIED)
            reaped += 1
    return reaped


def kill_trial_runs(ctx: StudyContext, optuna_study: str, number: int) -> None:
    """End the runs of a reaped trial: RUNNING ones, and ones that ended as a result (completed,
    pruned) whose ``tell`` never reached Optuna because the worker died in between. The trial is
    redone, so such a run must not count as a result a second time (the report reads MLflow)."""
    for run in ctx.runs.children_of_trial(optuna_study, number):
        if run.status == "RUNNING" or not run.tags.get("status", "").startswith("failed"):
            ctx.runs.set_state(run.run_id, "KILLED", tags={"status": f"failed: {DIED}"})


def close_orphan_runs(ctx: StudyContext) -> int:
    """End child runs left RUNNING whose Optuna trial is no longer running (or whose worker died)."""
    closed = 0
    registry = ctx.registry()
    for run in ctx.runs.running_children():
        study_name, number = run.tags.get("optuna_study"), run.tags.get("trial_number")
        if not study_name or number is None or not number.isdigit():
            continue  # not a sweep trial's run
        try:
            trial = ctx.study(study_name).trials[int(number)]
        except (KeyError, IndexError):
            trial = None
        if trial is not None and trial.state == TrialState.RUNNING and ctx.alive(trial, registry):
            continue
        ctx.runs.set_state(run.run_id, "KILLED", tags={"status": f"failed: {DIED}"})
        closed += 1
    return closed
