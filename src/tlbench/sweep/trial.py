"""Run one claimed Optuna trial: overrides -> composed config -> ``train`` in-process -> ``tell``.

Every way a trial can end is recorded in Optuna with a ``fail_kind`` that decides whether it counts
toward its cell's budget (see :mod:`tlbench.sweep.protocol`), and in MLflow as the trial's child run.
Ctrl-C and an unusable tracking store stop the sweep after the trial is recorded; anything else is
recorded and the sweep goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
from optuna.trial import TrialState

from tlbench.config import RunConfig, load_config
from tlbench.cost.device import release_memory
from tlbench.errors import TlbenchError, TrackingError
from tlbench.run import train
from tlbench.sweep import protocol as P
from tlbench.sweep.cells import Cell
from tlbench.sweep.meta import StudyContext
from tlbench.sweep.pruning import MONITOR, OptunaPruning
from tlbench.tracking import MlflowRun, names
from tlbench.tracking.study_runs import STUDY_TAG

log = logging.getLogger(__name__)
COST = names.DEVICE_HOURS
STANDALONE_COST = "cost/standalone_device_hours"  # with the reused feature extraction added back


def attr_name(metric: str) -> str:
    """The Optuna user attribute that holds a trial's metric (``val/acc`` -> ``val_acc``)."""
    return metric.replace("/", "_")


@dataclass(frozen=True)
class TrialPlan:
    role: str  # tune | final | budget_check
    optuna_study: str
    cell: Cell
    overrides: tuple[str, ...]
    prune: bool = False
    extra_tags: dict[str, str] = field(default_factory=dict)
    extra_metrics: dict[str, float] = field(default_factory=dict)  # logged to the trial's run after it ends
    objectives: tuple[str, ...] = (MONITOR,)  # pareto: (val/acc, cost/device_hours)
    run_name: str = ""  # the child run's name (plan.run_name); default: role:cell#number


def close_unrun(trial: optuna.Trial, kind: str, reason: str) -> None:
    """End a claimed trial that will not train (a lost concurrent claim); it never counts."""
    trial.set_user_attr(P.FAIL_KIND, kind)
    trial.set_user_attr(P.FAIL_REASON, reason)
    trial.study.tell(trial, state=TrialState.FAIL)


def _wire(cfg: RunConfig, ctx: StudyContext, plan: TrialPlan, number: int) -> RunConfig:
    tracking = replace(
        cfg.tracking,
        experiment=ctx.names.study,
        tracking_uri=ctx.runs.tracking_uri,
        parent_run_id=ctx.parent_run_id,
        run_name=plan.run_name or f"{plan.role}:{plan.cell.key}#{number}",
    )
    return replace(cfg, tracking=tracking, tags={**cfg.tags, **trial_tags(ctx, plan, number)})


def trial_tags(ctx: StudyContext, plan: TrialPlan, number: int) -> dict[str, str]:
    return {
        "role": plan.role,
        "trial_number": str(number),
        "optuna_study": plan.optuna_study,
        "cell": plan.cell.key,
        STUDY_TAG: ctx.names.study,
        **plan.extra_tags,
    }


def run_trial(ctx: StudyContext, trial: optuna.Trial, plan: TrialPlan) -> str:
    """Train the trial and record how it ended; returns its status (completed, pruned, failed: …)."""
    started = time.perf_counter()
    trial.set_user_attr("overrides", list(plan.overrides))
    try:
        status = _train_and_tell(ctx, trial, plan)
    finally:
        release_memory()  # never keep a model alive across trials
    log.info(
        "%s %s #%d: %s (%.0f s)",
        plan.role,
        plan.cell.key,
        trial.number,
        status,
        time.perf_counter() - started,
    )
    return status


def _train_and_tell(ctx: StudyContext, trial: optuna.Trial, plan: TrialPlan) -> str:
    try:
        cfg = _wire(load_config(plan.overrides), ctx, plan, trial.number)
        trial.set_user_attr(P.STRATEGY, cfg.strategy.name.value)
        trial.set_user_attr(P.SEED, cfg.seed)
        callbacks = [OptunaPruning(trial, val_checks=cfg.trainer.val_checks)] if plan.prune else []
        result = train(cfg, callbacks=callbacks)
    except KeyboardInterrupt:
        _fail(ctx, trial, plan, "interrupted", "interrupted")
        for run in ctx.runs.children_of_trial(plan.optuna_study, trial.number):
            ctx.runs.set_state(run.run_id, "KILLED")  # stopped, not broken: it is redone on resume
        raise
    except TrackingError as exc:
        _fail(ctx, trial, plan, "error", str(exc), record=False)  # nowhere to record it
        raise
    except TlbenchError as exc:  # an impossible configuration (e.g. freeze depth out of range): counts
        return _fail(ctx, trial, plan, P.CONFIG, str(exc))
    except (
        Exception
    ) as exc:  # a crash: recorded (train() marked its run FAILED), redone a bounded number of times
        log.warning("trial %s #%d raised", plan.optuna_study, trial.number, exc_info=True)
        first_line = str(exc).splitlines()[0][:200] if str(exc) else ""
        return _fail(ctx, trial, plan, "error", f"{type(exc).__name__}: {first_line}")
    if result.run_id:
        trial.set_user_attr(P.RUN_ID, result.run_id)
        if plan.extra_metrics:
            MlflowRun.attach(result.run_id, tracking_uri=ctx.runs.tracking_uri).log_metrics(
                plan.extra_metrics
            )
    for name in (names.VAL_ACC, names.TEST_ACC, COST, STANDALONE_COST, names.FIT_SECONDS, names.TRAIN_STEPS):
        if name in result.metrics:
            trial.set_user_attr(attr_name(name), result.metrics[name])
    trial.set_user_attr(P.STATUS, result.status)
    if result.status == "pruned":
        return _tell(trial, TrialState.PRUNED, None, result.status)
    if result.status.startswith(names.FAILED_PREFIX):  # diverged, collapsed, out of memory: its configuration
        collapsed = result.status.startswith(names.COLLAPSED_PREFIX)
        trial.set_user_attr(P.FAIL_KIND, P.COLLAPSED if collapsed else P.CONFIG)
        trial.set_user_attr(P.FAIL_REASON, result.status.removeprefix(names.FAILED_PREFIX))
        return _tell(trial, TrialState.FAIL, None, result.status)
    values = [result.metrics.get(name) for name in plan.objectives]
    if any(v is None for v in values):
        missing = [n for n, v in zip(plan.objectives, values, strict=True) if v is None]
        return _fail(ctx, trial, plan, P.CONFIG, f"no {', '.join(missing)} logged")
    return _tell(trial, TrialState.COMPLETE, [float(v or 0.0) for v in values], result.status)


def _tell(trial: optuna.Trial, state: TrialState, values: Sequence[float] | None, status: str) -> str:
    try:
        trial.study.tell(trial, values, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:  # another worker judged us dead (stale heartbeat)
        log.warning("trial %d was already closed by another worker; its result is not counted", trial.number)
    return status


def _fail(
    ctx: StudyContext, trial: optuna.Trial, plan: TrialPlan, kind: str, reason: str, *, record: bool = True
) -> str:
    """FAIL with a reason, and a FAILED child run if train() failed before starting one."""
    status = f"failed: {reason}"
    try:
        trial.set_user_attr(P.FAIL_KIND, kind)
        trial.set_user_attr(P.FAIL_REASON, reason)
        trial.set_user_attr(P.STATUS, status)
    except optuna.exceptions.UpdateFinishedTrialError:
        return status
    if record and kind != "interrupted" and not ctx.runs.children_of_trial(plan.optuna_study, trial.number):
        tags: dict[str, Any] = {**trial_tags(ctx, plan, trial.number), "status": status}
        run_id = ctx.runs.record_unrun_trial(
            run_name=plan.run_name or f"{plan.role}:{plan.cell.key}#{trial.number}",
            parent_run_id=ctx.parent_run_id,
            tags=tags,
            params={"overrides": " ".join(plan.overrides)},
        )
        trial.set_user_attr(P.RUN_ID, run_id)
    return _tell(trial, TrialState.FAIL, None, status)
