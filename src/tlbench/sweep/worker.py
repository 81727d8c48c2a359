"""One worker's loop over a tune-then-final study: claim the next piece of work until none is left.

Work, in order of preference: a tuning trial for a cell below its budget; a budget check (a tuned
arm's chosen configuration re-run with a multiple of its step budget, ``budget.check``) for a cell
whose tuning is done; a final run (the cell's best tuning configuration on one of ``final.seeds``).
Several workers (processes, machines) run this loop on one storage; they coordinate only through it:
claims are optimistic and resolved by trial number (:mod:`tlbench.sweep.protocol`). A worker with
nothing to claim waits while other live workers still run trials, since those may fail and need
redoing, or finish a cell whose finals it can then run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from tlbench.sweep import protocol as P
from tlbench.sweep.cells import (
    Cell,
    cell_by_key,
    cell_overrides,
    cell_search,
    override,
    tuning_budget,
    tuning_cell,
)
from tlbench.sweep.liveness import WORKER_ATTR
from tlbench.sweep.meta import StudyContext
from tlbench.sweep.plan import PLANNED_TRIALS, doubled_budget, planned_on_graph, run_label, run_name
from tlbench.sweep.race import Arm, ArmRace, Outcome, race_document, race_seeds, run_race
from tlbench.sweep.reaper import reap
from tlbench.sweep.samplers import make_pruner, make_sampler
from tlbench.sweep.space import param_overrides, suggest
from tlbench.sweep.spec import SIZE_FACTOR
from tlbench.sweep.trial import COST, STANDALONE_COST, TrialPlan, attr_name, close_unrun, run_trial
from tlbench.tracking import MlflowRun, names

log = logging.getLogger(__name__)
Job = Callable[[], None]
BASE_VAL_ATTR, BASE_RUN_ATTR = "base_val_acc", "base_run_id"  # a budget check's user attrs
RACE_ROUND_ATTR = "race_round"  # a final's user attr: the racing round it belongs to
RACE_DIGEST_ATTR = "race_digest"  # meta study: digest of the race.json last written to the parent run


@dataclass(frozen=True)
class Enqueued:
    """A slot's trial, enqueued for the first worker to claim: fixed params and user attrs."""

    slot: P.Slot
    params: dict[str, Any]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FinalRun:
    """One final run: a cell's chosen configuration (from tuning trial ``tuned_from``) on one seed."""

    cell_key: str
    seed: int
    tuned_from: int  # P.UNTUNED when the cell was not tuned
    params: dict[str, Any]
    race_round: int = 1

    @property
    def slot(self) -> P.Slot:
        return P.final_slot(self.cell_key, self.seed)

    def enqueued(self) -> Enqueued:
        attrs = {
            P.CELL: self.cell_key,
            P.SEED: self.seed,
            P.ROLE: names.FINAL,
            P.TUNED_FROM: self.tuned_from,
            RACE_ROUND_ATTR: self.race_round,
        }
        return Enqueued(self.slot, self.params, attrs)


@dataclass(frozen=True)
class RaceGroup:
    """The race of one data size: each arm's seeds and fate, the round reached, the runs due."""

    arms: list[ArmRace]
    rounds: int
    runs: list[FinalRun]


NO_CHOICE = "no completed tuning trial: no configuration to run"
TUNING = "still being tuned"


def _outcomes(
    trials: Sequence[FrozenTrial], cells: Sequence[str], *, max_retries: int
) -> dict[str, dict[int, Outcome]]:
    """cell -> seed -> what the race may read of its final run: done or not, val/acc, cost. Never test."""
    out: dict[str, dict[int, Outcome]] = {cell: {} for cell in cells}
    by_slot: dict[str, list[FrozenTrial]] = {}
    for t in trials:
        by_slot.setdefault(str(t.user_attrs.get(P.SLOT)), []).append(t)
    for cell in cells:
        for key, mine in by_slot.items():
            if not key.startswith(f"{cell}|seed="):
                continue
            seed = int(key.rsplit("=", 1)[1])
            slot = P.final_slot(cell, seed)
            counted = [t for t in mine if P.is_counted(t)]
            done = bool(counted) or P.slot_given_up(mine, slot, max_retries=max_retries)
            complete = next((t for t in counted if t.state == TrialState.COMPLETE), None)
            if complete is None:
                out[cell][seed] = Outcome(done=done)
                continue
            attrs = complete.user_attrs
            cost = attrs.get(attr_name(STANDALONE_COST), attrs.get(attr_name(COST)))
            out[cell][seed] = Outcome(
                done=True,
                val_acc=float(attrs[attr_name(names.VAL_ACC)]),
                cost=None if cost is None else float(cost),
            )
    return out


def slots_done(trials: Sequence[FrozenTrial], slots: Sequence[P.Slot], *, max_retries: int) -> bool:
    """Nothing running or waiting, and every slot counted or given up."""
    if any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials):
        return False
    return all(
        any(P.is_counted(t) for t in P.slot_trials(trials, slot))
        or P.slot_given_up(trials, slot, max_retries=max_retries)
        for slot in slots
    )


class TuneThenFinal:
    def __init__(self, ctx: StudyContext, *, offset: int = 0, workers: int = 1, poll_s: float = 2.0) -> None:
        self.ctx = ctx
        self.workers = workers
        self.spec = ctx.spec
        self.cells = list(ctx.plan.cells)
        shift = offset % len(self.cells)  # workers start on different cells: fewer lost claims
        self.order = self.cells[shift:] + self.cells[:shift]
        self.poll_s = poll_s

    @property
    def study_names(self) -> list[str]:
        names_ = [self.ctx.names.cell(c.key) for c in self.cells]
        if self.ctx.plan.check_cells:
            names_.append(self.ctx.names.budget_check)
        return [*names_, self.ctx.names.final]

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
        if self.ctx.plan.check_cells:
            self._enqueue(self.ctx.names.budget_check, [c.enqueued() for c in self.check_runs()])
            if self._waiting(self.ctx.names.budget_check):
                return self.check_one
        self._enqueue(self.ctx.names.final, [f.enqueued() for f in self.final_slots()])
        self.publish_race()
        if self._waiting(self.ctx.names.final):
            return self.final_one
        return None

    def _waiting(self, name: str) -> bool:
        return bool(self.ctx.study(name).get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def _others_running(self) -> bool:
        registry = self.ctx.registry()
        return any(
            self.ctx.alive(t, registry)
            for name in self.study_names
            for t in self.ctx.study(name).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        )

    def label(self, cell: Cell) -> str:
        return run_label(self.ctx.plan.facts[cell.key], cell)

    def graph_hint(self, cell: Cell) -> str:
        """``trainer.planned_trials``: the trials this worker will still run on this cell's graph."""
        plan = self.ctx.plan
        graph = plan.facts[cell.key].graph
        same = [c for c in self.cells if plan.facts[c.key].graph == graph]
        checked = {c.key for c in plan.check_cells}
        finals = self._trials(self.ctx.names.final) if self.spec.has_finals else []
        checks = self._trials(self.ctx.names.budget_check) if checked else []
        due_finals = (
            Counter(run.cell_key for run in self.final_slots()) if self.spec.has_finals else Counter()
        )
        due, done = {}, {}
        for c in same:
            first_round = len(self.spec.final_seeds) if self.spec.has_finals else 0
            due[c.key] = (
                tuning_budget(self.spec, c) + (c.key in checked) + max(due_finals[c.key], first_round)
            )
            done[c.key] = sum(
                1
                for t in [*self._trials(self.ctx.names.cell(c.key)), *finals, *checks]
                if P.is_counted(t) and t.user_attrs.get(P.CELL) == c.key
            )
        planned = planned_on_graph(plan, graph, due=due, done=done, workers=self.workers)
        return f"{PLANNED_TRIALS}={planned}"

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
        for key, value in ((P.ROLE, names.TUNE), (P.CELL, cell.key)):
            trial.set_user_attr(key, value)
        values = suggest(trial, params)
        overrides = [
            self.graph_hint(cell),  # first: a trainer.planned_trials of the sweep's own wins
            *cell_overrides(self.spec, cell),
            *param_overrides(values),
            f"seed={self.spec.tune_seed}",
        ]
        plan = TrialPlan(
            role=names.TUNE,
            optuna_study=name,
            cell=cell,
            overrides=tuple(overrides),
            prune=self.spec.pruner.name != "none",
            run_name=run_name(names.TUNE, self.label(cell), number=trial.number),
        )
        run_trial(self.ctx, trial, plan)

    def complete(self) -> bool:
        """Every cell tuned (or given up); every budget check and final slot counted (or given up)."""
        if not all(self.cell_status(cell).done for cell in self.cells):
            return False
        if not self.spec.has_finals:
            return True
        retries = self.spec.budget.max_retries
        if self.ctx.plan.check_cells and not slots_done(
            self._trials(self.ctx.names.budget_check),
            [c.slot for c in self.check_runs()],
            max_retries=retries,
        ):
            return False
        return slots_done(
            self._trials(self.ctx.names.final), [f.slot for f in self.final_slots()], max_retries=retries
        )

    def best(self, cell: Cell) -> FrozenTrial | None:
        return P.best_trial(self._trials(self.ctx.names.cell(cell.key)))

    def chosen(self, cell: Cell) -> tuple[int, dict[str, Any]] | None:
        """(tuned-from trial, params) of a cell whose tuning is done; None while it is not, or if it
        chose nothing (every trial failed). With ``budget.tune_at`` the tuning is its counterpart's."""
        source = tuning_cell(self.spec, cell)
        if not self.cell_status(source).done:
            return None
        if tuning_budget(self.spec, source) == 0:  # not tuned: the finals run the cell as configured
            return P.UNTUNED, {}
        best = self.best(source)
        return None if best is None else (best.number, dict(best.params))

    def final_slots(self) -> list[FinalRun]:
        """The final runs due: every seed for every arm, or with racing, the rounds reached so far."""
        if self.spec.race is None:
            runs = []
            for cell in self.cells:
                chosen = self.chosen(cell)
                if chosen is not None:
                    runs += [FinalRun(cell.key, seed, *chosen) for seed in self.spec.final_seeds]
            return runs
        return [run for group in self.race_groups() for run in group.runs]

    def race_groups(self) -> list[RaceGroup]:
        """The race of each data size, replayed from the final trials stored so far."""
        trials = self._trials(self.ctx.names.final)
        rounds = race_seeds(self.spec.final_seeds, self.spec.race, tune_seed=self.spec.tune_seed)
        round_of = {seed: n for n, seeds in enumerate(rounds, start=1) for seed in seeds}
        retries = self.spec.budget.max_retries
        groups: dict[Any, list[Cell]] = {}
        for cell in self.cells:
            groups.setdefault(cell.get(SIZE_FACTOR), []).append(cell)
        out = []
        for size, cells in groups.items():
            chosen = {cell.key: self.chosen(cell) for cell in cells}
            arms = [self._arm(cell, size) for cell in cells if chosen[cell.key] is not None]
            tuning = [c for c in cells if not self.cell_status(tuning_cell(self.spec, c)).done]
            if tuning:  # some arm is still being tuned: round 1 for the others, no decision yet
                state = [ArmRace(arm, seeds=list(rounds[0])) for arm in arms]
                reached = 1
            else:
                state, reached = run_race(
                    arms, _outcomes(trials, [a.cell for a in arms], max_retries=retries), rounds
                )
            unchosen = [
                ArmRace(self._arm(c, size), reason=TUNING if c in tuning else NO_CHOICE)
                for c in cells
                if chosen[c.key] is None
            ]
            runs = []
            for r in state:
                tuned_from, params = chosen[r.arm.cell] or (P.UNTUNED, {})
                runs += [FinalRun(r.arm.cell, s, tuned_from, params, race_round=round_of[s]) for s in r.seeds]
            out.append(RaceGroup([*state, *unchosen], reached, runs))
        return out

    def _arm(self, cell: Cell, size: Any) -> Arm:
        factors = {k: v for k, v in cell.values if k != SIZE_FACTOR}
        return Arm(cell=cell.key, strategy=self.ctx.plan.facts[cell.key].strategy, size=size, factors=factors)

    def publish_race(self) -> None:
        """Write ``race.json`` to the parent run when the race changed (any worker; same content)."""
        if self.spec.race is None:
            return
        groups = self.race_groups()
        document = race_document([(g.arms, g.rounds) for g in groups], race=self.spec.race)
        text = json.dumps(document, indent=2, default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        if self.ctx.meta.user_attrs.get(RACE_DIGEST_ATTR) == digest:
            return
        parent = MlflowRun.attach(self.ctx.parent_run_id, tracking_uri=self.ctx.runs.tracking_uri)
        parent.log_text(text, names.RACE_ARTIFACT)
        self.ctx.meta.set_user_attr(RACE_DIGEST_ATTR, digest)

    def check_runs(self) -> list[CheckRun]:
        """A budget check for each checked cell whose tuning is done and chose a configuration."""
        runs = []
        for cell in self.ctx.plan.check_cells:
            best = self.best(cell) if self.cell_status(cell).done else None
            if best is not None:
                runs.append(CheckRun.of(cell.key, best, seed=self.spec.tune_seed))
        return runs

    def _enqueue(self, name: str, due: Sequence[Enqueued]) -> None:
        study = self.ctx.study(name)
        trials = study.get_trials(deepcopy=False)
        for item in due:
            if P.slot_needs_trial(trials, item.slot, max_retries=self.spec.budget.max_retries):
                study.enqueue_trial(item.params, user_attrs={P.SLOT: item.slot.key, **item.attrs})

    def _claim(self, name: str) -> Any | None:
        """Pop an enqueued slot's trial; ``None`` (closed unrun) if another worker took the slot first."""
        study = self.ctx.study(name)
        trial = study.ask()  # pops an enqueued slot, or creates a blank trial if another worker was faster
        trial.set_user_attr(WORKER_ATTR, str(self.ctx.worker))
        trials = self._trials(name)
        frozen = next((t for t in trials if t.number == trial.number), None)
        if trial.user_attrs.get(P.SLOT) is None or frozen is None or not P.first_claim(trials, frozen):
            close_unrun(trial, "duplicate", "slot already taken (concurrent claim)")
            return None
        return trial

    def final_one(self) -> None:
        name = self.ctx.names.final
        trial = self._claim(name)
        if trial is None:
            return
        cell = cell_by_key(self.cells)[str(trial.user_attrs[P.CELL])]
        values = suggest(trial, cell_search(self.spec, cell))  # the enqueued (tuned) values
        seed = int(trial.user_attrs[P.SEED])
        overrides = [
            self.graph_hint(cell),
            *cell_overrides(self.spec, cell),
            *param_overrides(values),
            override("seed", seed),
        ]
        tags = {
            P.TUNED_FROM: str(trial.user_attrs[P.TUNED_FROM]),
            names.RACE_ROUND: str(trial.user_attrs.get(RACE_ROUND_ATTR, 1)),
        }
        source = tuning_cell(self.spec, cell)
        if source != cell:  # budget.tune_at: the configuration was chosen at another data size
            tags[names.TUNED_IN] = source.key
        plan = TrialPlan(
            role=names.FINAL,
            optuna_study=name,
            cell=cell,
            overrides=tuple(overrides),
            extra_tags=tags,
            run_name=run_name(names.FINAL, self.label(cell), number=trial.number, seed=seed),
        )
        run_trial(self.ctx, trial, plan)

    def check_one(self) -> None:
        """A tuned configuration with ``budget.check.factor`` x its step budget, on the tuning seed."""
        name = self.ctx.names.budget_check
        trial = self._claim(name)
        if trial is None:
            return
        check = self.spec.budget.check
        assert check is not None  # there are check cells only with budget.check
        cell = cell_by_key(self.cells)[str(trial.user_attrs[P.CELL])]
        values = suggest(trial, cell_search(self.spec, cell))
        budget = doubled_budget(self.ctx.plan.facts[cell.key], values, check.factor)
        overrides = [
            self.graph_hint(cell),
            *cell_overrides(self.spec, cell),
            *param_overrides(values),
            *budget,
            override("seed", int(trial.user_attrs[P.SEED])),
        ]
        base_run = str(trial.user_attrs.get(BASE_RUN_ATTR) or "")
        plan = TrialPlan(
            role=names.BUDGET_CHECK,
            optuna_study=name,
            cell=cell,
            overrides=tuple(overrides),
            extra_tags={
                P.TUNED_FROM: str(trial.user_attrs[P.TUNED_FROM]),
                names.BUDGET_FACTOR: str(check.factor),
                names.BASE_RUN_ID: base_run,
            },
            extra_metrics={names.BASE_VAL_ACC: float(trial.user_attrs[BASE_VAL_ATTR])},
            run_name=run_name(names.BUDGET_CHECK, self.label(cell), number=trial.number, factor=check.factor),
        )
        run_trial(self.ctx, trial, plan)


@dataclass(frozen=True)
class CheckRun:
    """A budget check of one cell: its best tuning trial's configuration with a larger step budget."""

    cell_key: str
    tuned_from: int
    params: dict[str, Any]
    base_val_acc: float
    base_run_id: str
    seed: int

    @classmethod
    def of(cls, cell_key: str, best: FrozenTrial, *, seed: int) -> CheckRun:
        return cls(
            cell_key=cell_key,
            tuned_from=best.number,
            params=dict(best.params),
            base_val_acc=float(best.value or 0.0),
            base_run_id=str(best.user_attrs.get(P.RUN_ID, "")),
            seed=seed,
        )

    @property
    def slot(self) -> P.Slot:
        return P.Slot(self.cell_key, "budget_check")

    def enqueued(self) -> Enqueued:
        attrs = {
            P.CELL: self.cell_key,
            P.SEED: self.seed,
            P.ROLE: names.BUDGET_CHECK,
            P.TUNED_FROM: self.tuned_from,
            BASE_VAL_ATTR: self.base_val_acc,
            BASE_RUN_ATTR: self.base_run_id,
        }
        return Enqueued(self.slot, self.params, attrs)
