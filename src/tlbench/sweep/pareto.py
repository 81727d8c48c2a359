"""Multi-objective mode: one study over all configurations, maximise val/acc, minimise device-hours.

The crossed factors become categorical parameters next to the searched ones, so the sampler
(NSGA-II by default) explores strategy, data size and learning rate together; the answer is the
Pareto set (``study.best_trials``), printed and tagged ``pareto=true`` on its MLflow runs. There is
no pruning: Optuna has no multi-objective pruner, and a pruned trial has no cost/accuracy point.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from tlbench.sweep import protocol as P
from tlbench.sweep.cells import cell_from_params, cell_overrides, cell_search
from tlbench.sweep.liveness import WORKER_ATTR
from tlbench.sweep.meta import StudyContext
from tlbench.sweep.pruning import MONITOR
from tlbench.sweep.reaper import reap
from tlbench.sweep.samplers import make_sampler
from tlbench.sweep.space import param_overrides, suggest, suggest_factors
from tlbench.sweep.trial import COST, TrialPlan, close_unrun, run_trial

log = logging.getLogger(__name__)
OBJECTIVES = (MONITOR, COST)
PARETO_ATTR = "pareto_trials"  # meta study user attr: the Pareto set's trial numbers


@dataclass(frozen=True)
class ParetoPoint:
    number: int
    cell: str
    val_acc: float
    device_hours: float
    params: dict[str, object]
    run_id: str | None


class Pareto:
    def __init__(self, ctx: StudyContext, *, poll_s: float = 2.0) -> None:
        self.ctx = ctx
        self.spec = ctx.spec
        self.poll_s = poll_s
        self.name = ctx.names.pareto
        self.budget = ctx.spec.budget.trials or 1

    @property
    def study_names(self) -> list[str]:
        return [self.name]

    def _status(self) -> P.CellStatus:
        trials = self.ctx.study(self.name).get_trials(deepcopy=False)
        return P.cell_status(
            trials, budget=self.budget, max_retries=self.spec.budget.max_retries, alive=self.ctx.alive
        )

    def run(self, *, should_stop: Callable[[], bool] = lambda: False) -> None:
        while not should_stop():
            reap(self.ctx, self.study_names)
            status = self._status()
            if status.needed > 0:
                self.run_one()
            elif status.running > 0:
                time.sleep(self.poll_s)
            else:
                return

    def complete(self) -> bool:
        return self._status().done

    def run_one(self) -> None:
        study = self.ctx.study(self.name)
        salt = len(study.get_trials(deepcopy=False))
        study.sampler = make_sampler(
            self.spec.sampler, [], cell_key="pareto", salt=salt, multi_objective=True
        )
        trial = study.ask()
        trial.set_user_attr(WORKER_ATTR, str(self.ctx.worker))
        if not P.claim_within_budget(study.get_trials(deepcopy=False), trial.number, self.budget):
            close_unrun(trial, "over_budget", "over budget (concurrent claim)")
            return
        cell = cell_from_params(self.spec, suggest_factors(trial, self.spec))
        values = suggest(trial, cell_search(self.spec, cell))
        trial.set_user_attr(P.ROLE, "tune")
        trial.set_user_attr(P.CELL, cell.key)
        overrides = [
            *cell_overrides(self.spec, cell),
            *param_overrides(values),
            f"seed={self.spec.tune_seed}",
        ]
        plan = TrialPlan(
            role="tune", optuna_study=self.name, cell=cell, overrides=tuple(overrides), objectives=OBJECTIVES
        )
        run_trial(self.ctx, trial, plan)

    def pareto_set(self) -> list[ParetoPoint]:
        study = self.ctx.study(self.name)
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            return []
        return [_point(t) for t in sorted(study.best_trials, key=lambda t: t.values[1])]

    def publish(self) -> list[ParetoPoint]:
        """Record the Pareto set: meta study attr and ``pareto=true`` on the trials' MLflow runs."""
        points = self.pareto_set()
        self.ctx.meta.set_user_attr(PARETO_ATTR, [p.number for p in points])
        for point in points:
            if point.run_id:
                self.ctx.runs.set_tags(point.run_id, {"pareto": "true"})
        return points


def _point(trial: FrozenTrial) -> ParetoPoint:
    run_id = trial.user_attrs.get(P.RUN_ID)
    return ParetoPoint(
        number=trial.number,
        cell=str(trial.user_attrs.get(P.CELL, "")),
        val_acc=float(trial.values[0]),
        device_hours=float(trial.values[1]),
        params=dict(trial.params),
        run_id=str(run_id) if run_id else None,
    )


def format_pareto(points: list[ParetoPoint]) -> str:
    if not points:
        return "Pareto set: empty (no trial completed)"
    lines = [f"Pareto set ({len(points)} trials; maximise val/acc, minimise device-hours):"]
    for p in points:
        searched = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.params.items()
        )
        lines.append(f"  #{p.number:<4} val/acc={p.val_acc:.4f}  device_h={p.device_hours:.2e}  {searched}")
    return "\n".join(lines)
