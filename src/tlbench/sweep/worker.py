"""One worker's loop over a tune-then-final study: claim the next piece of work until none is left.

Work, in order of preference: a tuning trial for a cell below its budget; a final run (the cell's
best tuning configuration on one of ``final.seeds``) for a cell whose tuning is done. Several
workers (processes, machines) run this loop on one storage; they coordinate only through it:
claims are optimistic and resolved by trial number (:mod:`tlbench.sweep.protocol`). A worker with
nothing to claim waits while other live workers still run trials, since those may fail and need redoing,
or finish a cell whose finals it can then run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from tlbench.sweep import protocol as P
from tlbench.sweep.cells import (
    Cell,
    cell_by_key,
    cell_overrides,
    cell_search,
    expand_cells,
    override,
    tuning_budget,
)
from tlbench.sweep.liveness import WORKER_ATTR
from tlbench.sweep.meta import StudyContext
from tlbench.sweep.reaper import reap
from tlbench.sweep.samplers import make_pruner, make_sampler
from tlbench.sweep.space import param_overrides, suggest
from tlbench.sweep.trial import TrialPlan, close_unrun, run_trial

log = logging.getLogger(__name__)
Job = Callable[[], None]


@dataclass(frozen=True)
class FinalRun:
    """One final run: a cell's chosen configuration (from tuning trial ``tuned_from``) on one seed."""

    cell_key: str
    seed: int
    tuned_from: int  # P.UNTUNED when the cell was not tuned
    params: dict[str, Any]

    @property
    def slot(self) -> P.Slot:
        return P.final_slot(self.cell_key, self.seed)


class TuneThenFinal:
    def __init__(self, ctx: StudyContext, *, offset: int = 0, poll_s: float = 2.0) -> None:
        self.ctx = ctx
        self.spec = ctx.spec
        self.cells = expand_cells(ctx.spec)
        shift = offset % len(self.cells)  # workers start on different cells: fewer lost claims
        self.order = self.cells[shift:] + self.cells[:shift]
        self.poll_s = poll_s

    @property
    def study_names(self) -> list[str]:
        return [self.ctx.names.cell(c.key) for c in self.cells] + [self.ctx.names.final]

    def run(self, *, should_stop: Callable[[], bool] = lambda: False) -> None:
        while not should_stop():
            reap(self.ctx, self.study_names)
            job = self.next_job()
            if job is not None:
                job()
            elif self._others_running():
                time.sleep(self.poll_s)
            else:
                return

    def _trials(self, name: str) -> list[FrozenTrial]:
        return self.ctx.study(name).get_trials(deepcopy=False)

    def cell_status(self, cell: Cell) -> P.CellStatus:
        return P.cell_status(
            self._trials(self.ctx.names.cell(cell.key)),
            budget=tuning_budget(self.spec, cell),
            max_retries=self.spec.budget.max_retries,
            alive=self.ctx.alive,
        )

    def next_job(self) -> Job | None:
        for cell in self.order:
            if self.cell_status(cell).needed > 0:
                return partial(self.tune_one, cell)
        if not self.spec.has_finals:
            return None
        self._enqueue_finals()
        final = self.ctx.study(self.ctx.names.final)
        if final.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return self.final_one
        return None

    def _others_running(self) -> bool:
        registry = self.ctx.registry()
        return any(
            self.ctx.alive(t, registry)
            for name in self.study_names
            for t in self.ctx.study(name).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        )

    def tune_one(self, cell: Cell) -> None:
        name = self.ctx.names.cell(cell.key)
        study = self.ctx.study(name)
        params = cell_search(self.spec, cell)
        salt = len(study.get_trials(deepcopy=False))
        study.sampler = make_sampler(self.spec.sampler, params, cell_key=cell.key, salt=salt)
        study.pruner = make_pruner(self.spec.pruner)
        trial = study.ask()
        trial.set_user_attr(WORKER_ATTR, str(self.ctx.worker))
        if not P.claim_within_budget(self._trials(name), trial.number, tuning_budget(self.spec, cell)):
            close_unrun(trial, "over_budget", "over budget (concurrent claim)")
            return
        for key, value in ((P.ROLE, "tune"), (P.CELL, cell.key)):
            trial.set_user_attr(key, value)
        values = suggest(trial, params)
        overrides = [
            *cell_overrides(self.spec, cell),
            *param_overrides(values),
            f"seed={self.spec.tune_seed}",
        ]
        plan = TrialPlan(
            role="tune",
            optuna_study=name,
            cell=cell,
            overrides=tuple(overrides),
            prune=self.spec.pruner.name != "none",
        )
        run_trial(self.ctx, trial, plan)

    def complete(self) -> bool:
        """Every cell tuned (or given up) and every final slot counted (or given up)."""
        if not all(self.cell_status(cell).done for cell in self.cells):
            return False
        if not self.spec.has_finals:
            return True
        trials = self._trials(self.ctx.names.final)
        if any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials):
            return False
        retries = self.spec.budget.max_retries
        return all(
            any(P.is_counted(t) for t in P.slot_trials(trials, run.slot))
            or P.slot_given_up(trials, run.slot, max_retries=retries)
            for run in self.final_slots()
        )

    def final_slots(self) -> list[FinalRun]:
        """The final runs due for every cell whose tuning is done."""
        slots: list[FinalRun] = []
        for cell in self.cells:
            if not self.cell_status(cell).done:
                continue
            if tuning_budget(self.spec, cell) == 0:  # not tuned: the finals run the cell as configured
                slots += [FinalRun(cell.key, seed, P.UNTUNED, {}) for seed in self.spec.final_seeds]
                continue
            best = P.best_trial(self._trials(self.ctx.names.cell(cell.key)))
            if best is None:
                continue  # nothing completed: the cell has no result to confirm
            slots += [FinalRun(cell.key, seed, best.number, best.params) for seed in self.spec.final_seeds]
        return slots

    def _enqueue_finals(self) -> None:
        final = self.ctx.study(self.ctx.names.final)
        trials = final.get_trials(deepcopy=False)
        for run in self.final_slots():
            if P.slot_needs_trial(trials, run.slot, max_retries=self.spec.budget.max_retries):
                final.enqueue_trial(
                    run.params,
                    user_attrs={
                        P.SLOT: run.slot.key,
                        P.CELL: run.cell_key,
                        P.SEED: run.seed,
                        P.ROLE: "final",
                        P.TUNED_FROM: run.tuned_from,
                    },
                )

    def final_one(self) -> None:
        name = self.ctx.names.final
        study = self.ctx.study(name)
        trial = study.ask()  # pops an enqueued slot, or creates a blank trial if another worker was faster
        trial.set_user_attr(WORKER_ATTR, str(self.ctx.worker))
        slot_key = trial.user_attrs.get(P.SLOT)
        frozen = next((t for t in self._trials(name) if t.number == trial.number), None)
        if slot_key is None or frozen is None or not P.first_claim(self._trials(name), frozen):
            close_unrun(trial, "duplicate", "final slot already taken (concurrent claim)")
            return
        cell = cell_by_key(self.cells)[str(trial.user_attrs[P.CELL])]
        values = suggest(trial, cell_search(self.spec, cell))  # the enqueued (tuned) values
        seed = int(trial.user_attrs[P.SEED])
        overrides = [*cell_overrides(self.spec, cell), *param_overrides(values), override("seed", seed)]
        plan = TrialPlan(
            role="final",
            optuna_study=name,
            cell=cell,
            overrides=tuple(overrides),
            extra_tags={P.TUNED_FROM: str(trial.user_attrs[P.TUNED_FROM])},
        )
        run_trial(self.ctx, trial, plan)
