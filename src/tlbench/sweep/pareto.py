"""Multi-objective mode: one study over all configurations, maximise val/acc, minimise device-hours.

Every cell (a combination of the crossed factors: an arm) gets the same number of trials,
``budget.trials_per_cell``: its trials are enqueued with the cell's factor values fixed, and the
sampler (NSGA-II by default) chooses the searched values of each, learning from the whole study.
Letting the sampler choose the factors too would give the arms it likes more trials, and so more
chances at a good learning rate: the unfair comparison issue 19 removes. The answer is the Pareto
set (``study.best_trials``), printed and tagged ``pareto=true`` on its MLflow runs. There is no
pruning: Optuna has no multi-objective pruner, and a pruned trial has no cost/accuracy point.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from tlbench.sweep import protocol as P
from tlbench.sweep.cells import Cell, cell_by_key, cell_from_params, cell_overrides, cell_search, expand_cells
from tlbench.sweep.liveness import WORKER_ATTR
from tlbench.sweep.meta import StudyContext
from tlbench.sweep.plan import PLANNED_TRIALS, planned_on_graph, run_label, run_name
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
    def __init__(self, ctx: StudyContext, *, workers: int = 1, poll_s: float = 2.0) -> None:
        self.ctx = ctx
        self.workers = workers
        self.spec = ctx.spec
        self.poll_s = poll_s
        self.name = ctx.names.pareto
        self.cells = expand_cells(ctx.spec)

    @property
    def study_names(self) -> list[str]:
        return [self.name]

    def slots(self) -> list[P.Slot]:
        """``trials_per_cell`` slots per cell: the fair share of every arm."""
        per_cell = self.spec.budget.trials_per_cell
        return [P.Slot(cell.key, f"trial={i}") for cell in self.cells for i in range(per_cell)]

    def _trials(self) -> list[FrozenTrial]:
        return self.ctx.study(self.name).get_trials(deepcopy=False)

    def run(self, *, should_stop: Callable[[], bool] = lambda: False) -> None:
        while not should_stop():
            reap(self.ctx, self.study_names)
            self._enqueue()
            study = self.ctx.study(self.name)
            if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                self.run_one()
            elif any(t.state == TrialState.RUNNING and self.ctx.alive(t) for t in self._trials()):
                time.sleep(self.poll_s)
            else:
                return

    def complete(self) -> bool:
        trials = self._trials()
        if any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials):
            return False
        retries = self.spec.budget.max_retries
        return all(
            any(P.is_counted(t) for t in P.slot_trials(trials, slot))
            or P.slot_given_up(trials, slot, max_retries=retries)
            for slot in self.slots()
        )

    def _enqueue(self) -> None:
        study = self.ctx.study(self.name)
        trials = study.get_trials(deepcopy=False)
        cells = cell_by_key(self.cells)
        for slot in self.slots():
            if P.slot_needs_trial(trials, slot, max_retries=self.spec.budget.max_retries):
                study.enqueue_trial(
                    {name: value for name, value in cells[slot.cell_key].values},
                    user_attrs={P.SLOT: slot.key, P.CELL: slot.cell_key, P.ROLE: "tune"},
                )

    def run_one(self) -> None:
        study = self.ctx.study(self.name)
        # every slot is enqueued up front: count only the trials already claimed, or every trial would
        # be sampled with the same seed
        salt = sum(1 for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING)
        study.sampler = make_sampler(
            self.spec.sampler, [], cell_key="pareto", salt=salt, multi_objective=True
        )
        trial = study.ask()  # pops an enqueued slot, or creates a blank trial if another worker was faster
        trial.set_user_attr(WORKER_ATTR, str(self.ctx.worker))
        trials = self._trials()
        frozen = next((t for t in trials if t.number == trial.number), None)
        if trial.user_attrs.get(P.SLOT) is None or frozen is None or not P.first_claim(trials, frozen):
            close_unrun(trial, "duplicate", "Pareto slot already taken (concurrent claim)")
            return
        cell = cell_from_params(self.spec, suggest_factors(trial, self.spec))  # the enqueued factor values
        values = suggest(trial, cell_search(self.spec, cell))
        overrides = [
            self.graph_hint(cell),  # first: a trainer.planned_trials of the sweep's own wins
            *cell_overrides(self.spec, cell),
            *param_overrides(values),
            f"seed={self.spec.tune_seed}",
        ]
        label = run_label(self.ctx.plan.facts[cell.key], cell)
        plan = TrialPlan(
            role="tune",
            optuna_study=self.name,
            cell=cell,
            overrides=tuple(overrides),
            objectives=OBJECTIVES,
            run_name=run_name("tune", label, number=trial.number),
        )
        run_trial(self.ctx, trial, plan)

    def graph_hint(self, cell: Cell) -> str:
        """``trainer.planned_trials``: the trials this worker will still run on this cell's graph."""
        done = Counter(str(t.user_attrs.get(P.CELL)) for t in self._trials() if P.is_counted(t))
        due = dict.fromkeys((c.key for c in self.cells), self.spec.budget.trials_per_cell)
        graph = self.ctx.plan.facts[cell.key].graph
        planned = planned_on_graph(self.ctx.plan, graph, due=due, done=done, workers=self.workers)
        return f"{PLANNED_TRIALS}={planned}"

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
