"""One worker: claims work from the study and runs it, one trial at a time (tune, check, final, race or
Pareto), with the samplers and pruners it searches with."""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
import zlib
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import optuna
from lightning.pytorch.callbacks import Callback
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from tlbench.config import load_config
from tlbench.errors import TlbenchError, TrackingError, TrialPruned
from tlbench.run import train
from tlbench.sweep.plan import (
    CELL,
    COLLAPSED,
    CONFIG,
    FAIL_KIND,
    FAIL_REASON,
    PLANNED_TRIALS,
    ROLE,
    RUN_ID,
    SEED,
    SLOT,
    STATUS,
    STRATEGY,
    TUNED_FROM,
    UNTUNED,
    Cell,
    CellStatus,
    Slot,
    best_trial,
    cell_by_key,
    cell_from_params,
    cell_overrides,
    cell_search,
    cell_status,
    claim_within_budget,
    distribution,
    doubled_budget,
    final_slot,
    first_claim,
    grid_space,
    is_counted,
    param_overrides,
    planned_on_graph,
    run_label,
    run_name,
    slot_given_up,
    slot_needs_trial,
    suggest,
    suggest_factors,
    tuning_budget,
    tuning_cell,
)
from tlbench.sweep.race import Arm, ArmRace, Outcome, race_document, race_seeds, run_race
from tlbench.sweep.spec import SIZE_FACTOR, PrunerSpec, SamplerSpec, SearchParam, override
from tlbench.sweep.study import WORKER_ATTR, StudyContext, reap
from tlbench.tracking import MlflowRun, names
from tlbench.tracking.names import STUDY_TAG
from tlbench.training.device import release_memory

log = logging.getLogger(__name__)

# --- pruning ---
MONITOR = names.VAL_ACC


# Not optuna_integration.PyTorchLightningPruningCallback: it decides inside on_validation_end, before the
# epoch's record (and its MLflow curve point) is complete; here epoch e is decided when epoch e+1 starts.
class OptunaPruning(Callback):
    """``trial.report(val/acc, step)`` after each validation; raise :class:`TrialPruned` when told to.

    The step (the pruner's resource) is the epoch, or with ``trainer.val_checks`` the share of the step
    budget done, in units of ``1 / val_checks`` (``floor(epoch × val_checks / epochs)``): a rung means
    the same share of the budget at 5 and at 500 images per class.
    """

    def __init__(self, trial: optuna.trial.Trial, *, val_checks: int | None = None) -> None:
        self.trial = trial
        self.val_checks = val_checks
        self.last_step: int | None = None  # reported, not yet decided on
        self.reported = 0  # the last step reported
        self.last_epoch = 0

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(MONITOR)
        if value is None:
            return
        epoch = int(trainer.current_epoch) + 1
        max_epochs = int(trainer.max_epochs or 0)
        step = epoch * self.val_checks // max_epochs if self.val_checks and max_epochs >= 1 else epoch
        if step <= self.reported:
            return
        self.trial.report(float(value), step=step)
        self.reported, self.last_step, self.last_epoch = step, step, epoch

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if self.last_step is None:  # nothing new was reported since the last decision
            return
        step, self.last_step = self.last_step, None
        if self.trial.should_prune():
            unit = f"{step}/{self.val_checks} of the budget" if self.val_checks else f"epoch {step}"
            raise TrialPruned(f"pruned after {unit} (epoch {self.last_epoch})", epoch=self.last_epoch)


class _CountedTrialsView:
    """The study as the pruner should see it: without the trials that do not count (a crashed trial's
    values would stay in the successive-halving rungs and prune the trial that redoes its work)."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        trials = self._study.get_trials(deepcopy=deepcopy, states=states)
        return [t for t in trials if t.state != TrialState.FAIL or is_counted(t)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class FairPruner(optuna.pruners.BasePruner):
    """Prune as ``inner`` does, over counted trials only, and never before the cell has a completed trial
    (every cell gets a result to confirm in the finals: successive halving could prune them all)."""

    def __init__(self, inner: optuna.pruners.BasePruner) -> None:
        self.inner = inner

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        # Always ask the inner pruner: it records this trial's rung values for later comparisons.
        decision = bool(self.inner.prune(_CountedTrialsView(study), trial))  # type: ignore[arg-type]
        return decision and bool(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


# --- samplers ---
# A sampler is built afresh for every claimed trial, seeded from the sweep's seed, the cell and the
# number of trials its study holds: a serial sweep is reproducible, and a resumed one does not replay.
def derived_seed(base: int, cell_key: str, salt: int) -> int:
    """Stable across processes and Python versions (``hash()`` of a str is salted per process)."""
    return (base * 1_000_003 + zlib.crc32(cell_key.encode()) + salt * 7_919) % (2**31 - 1)


class _GridSampler(optuna.samplers.GridSampler):
    """Grid search under ask/tell: Optuna's version calls ``study.stop()`` (only valid inside
    ``optimize``) once the grid is exhausted; here the cell's budget decides when to stop."""

    def after_trial(self, *args: Any, **kwargs: Any) -> None:
        return None


class _QMCSampler(optuna.samplers.QMCSampler):
    """Every trial a point of the cell's Sobol design, the first one included: Optuna's learns the space
    from the first completed or pruned trial, so with a sampler built per trial, a cell whose first
    trial failed drew the same random value again. The space is known from the sweep file."""

    def __init__(self, params: Sequence[SearchParam], seed: int) -> None:
        with warnings.catch_warnings():  # "experimental since 3.0": a stable API by now, not news to users
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(
                scramble=True, seed=seed, warn_asynchronous_seeding=False, warn_independent_sampling=False
            )
        self._space = {p.path: distribution(p) for p in params}

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self._space)


SamplerFactory = Callable[[SamplerSpec, Sequence[SearchParam], int, bool], optuna.samplers.BaseSampler]
PrunerFactory = Callable[[PrunerSpec], optuna.pruners.BasePruner]

# name -> factory(spec, searched params, derived seed, multi-objective). Grid and QMC order their design
# by the sweep's seed, not the derived one: the same for every trial of a cell, and for every cell.
SAMPLERS: dict[str, SamplerFactory] = {
    "tpe": lambda spec, params, seed, multi: optuna.samplers.TPESampler(
        seed=seed,
        constant_liar=True,
        multivariate=multi,
        n_startup_trials=10 if spec.n_startup_trials is None else spec.n_startup_trials,  # Optuna's default
    ),
    "random": lambda spec, params, seed, multi: optuna.samplers.RandomSampler(seed=seed),
    "qmc": lambda spec, params, seed, multi: _QMCSampler(params, spec.seed),
    "grid": lambda spec, params, seed, multi: _GridSampler(grid_space(params), seed=spec.seed),
    "nsgaii": lambda spec, params, seed, multi: optuna.samplers.NSGAIISampler(seed=seed),
}

# name -> factory(spec); the resource: see OptunaPruning; every pruner but "none" is wrapped in FairPruner.
PRUNERS: dict[str, PrunerFactory] = {
    "none": lambda spec: optuna.pruners.NopPruner(),
    "successive_halving": lambda spec: FairPruner(
        optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spec.min_resource, reduction_factor=spec.reduction_factor
        )
    ),
    "hyperband": lambda spec: FairPruner(
        optuna.pruners.HyperbandPruner(min_resource=spec.min_resource, reduction_factor=spec.reduction_factor)
    ),
    "median": lambda spec: FairPruner(
        optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=spec.n_warmup_steps)
    ),
}


def make_sampler(
    spec: SamplerSpec,
    params: Sequence[SearchParam],
    *,
    cell_key: str,
    salt: int,
    multi_objective: bool = False,
) -> optuna.samplers.BaseSampler:
    """The sampler of ``spec.name`` (validated by the sweep spec against the same names)."""
    return SAMPLERS[str(spec.name)](spec, params, derived_seed(spec.seed, cell_key, salt), multi_objective)


def make_pruner(spec: PrunerSpec) -> optuna.pruners.BasePruner:
    return PRUNERS[spec.name](spec)


# --- trial ---
# Every way a trial can end is recorded in Optuna with a ``fail_kind`` (whether it counts, see plan)
# and in MLflow as the trial's child run. Ctrl-C and an unusable tracking store then stop the sweep.
COST = names.DEVICE_HOURS
STANDALONE_COST = names.STANDALONE_DEVICE_HOURS  # with the reused feature extraction added back


def attr_name(metric: str) -> str:
    """The Optuna user attribute that holds a trial's metric (``val/acc`` -> ``val_acc``)."""
    return metric.replace("/", "_")


@dataclass(frozen=True)
class TrialPlan:
    role: str  # tune | final | budget_check
    optuna_study: str
    cell: Cell
    overrides: tuple[str, ...]
    run_name: str  # the child run's name (plan.run_name)
    prune: bool = False
    extra_tags: dict[str, str] = field(default_factory=dict)
    extra_metrics: dict[str, float] = field(default_factory=dict)  # logged to the trial's run after it ends
    objectives: tuple[str, ...] = (MONITOR,)  # pareto: (val/acc, cost/device_hours)


def close_unrun(trial: optuna.Trial, kind: str, reason: str) -> None:
    """End a claimed trial that will not train (a lost concurrent claim); it never counts."""
    trial.set_user_attr(FAIL_KIND, kind)
    trial.set_user_attr(FAIL_REASON, reason)
    trial.study.tell(trial, state=TrialState.FAIL)


def trial_tags(ctx: StudyContext, plan: TrialPlan, number: int) -> dict[str, str]:
    return {
        names.ROLE: plan.role,
        names.TRIAL_NUMBER: str(number),
        names.OPTUNA_STUDY: plan.optuna_study,
        names.CELL: plan.cell.key,
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
        cfg = load_config(plan.overrides)
        tracking = replace(
            cfg.tracking,
            experiment=ctx.names.study,
            tracking_uri=ctx.runs.tracking_uri,
            parent_run_id=ctx.parent_run_id,
            run_name=plan.run_name,
        )
        cfg = replace(cfg, tracking=tracking, tags={**cfg.tags, **trial_tags(ctx, plan, trial.number)})
        trial.set_user_attr(STRATEGY, cfg.strategy.name.value)
        trial.set_user_attr(SEED, cfg.seed)
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
        return _fail(ctx, trial, plan, CONFIG, str(exc))
    # a crash: recorded (train() marked its run FAILED), redone a bounded number of times
    except Exception as exc:
        log.warning("trial %s #%d raised", plan.optuna_study, trial.number, exc_info=True)
        first_line = str(exc).splitlines()[0][:200] if str(exc) else ""
        return _fail(ctx, trial, plan, "error", f"{type(exc).__name__}: {first_line}")
    if result.run_id:
        trial.set_user_attr(RUN_ID, result.run_id)
        if plan.extra_metrics:
            MlflowRun.attach(result.run_id, tracking_uri=ctx.runs.tracking_uri).log_metrics(
                plan.extra_metrics
            )
    for name in (names.VAL_ACC, names.TEST_ACC, COST, STANDALONE_COST, names.FIT_SECONDS, names.TRAIN_STEPS):
        if name in result.metrics:
            trial.set_user_attr(attr_name(name), result.metrics[name])
    if result.status.startswith(names.FAILED_PREFIX):  # diverged, collapsed, out of memory: its configuration
        kind = COLLAPSED if result.status.startswith(names.COLLAPSED_PREFIX) else CONFIG
        return _fail(ctx, trial, plan, kind, result.status.removeprefix(names.FAILED_PREFIX), record=False)
    trial.set_user_attr(STATUS, result.status)
    if result.status == "pruned":
        return _tell(trial, TrialState.PRUNED, None, result.status)
    values = [result.metrics.get(name) for name in plan.objectives]
    if any(v is None for v in values):
        missing = [n for n, v in zip(plan.objectives, values, strict=True) if v is None]
        return _fail(ctx, trial, plan, CONFIG, f"no {', '.join(missing)} logged")
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
    """FAIL with a reason (and status), and a FAILED child run if train() failed before starting one."""
    status = f"{names.FAILED_PREFIX}{reason}"
    try:
        trial.set_user_attr(FAIL_KIND, kind)
        trial.set_user_attr(FAIL_REASON, reason)
        trial.set_user_attr(STATUS, status)
    except optuna.exceptions.UpdateFinishedTrialError:
        return status
    if record and kind != "interrupted" and not ctx.runs.children_of_trial(plan.optuna_study, trial.number):
        tags: dict[str, Any] = {**trial_tags(ctx, plan, trial.number), names.STATUS: status}
        run_id = ctx.runs.record_unrun_trial(
            run_name=plan.run_name,
            parent_run_id=ctx.parent_run_id,
            tags=tags,
            params={"overrides": " ".join(plan.overrides)},
        )
        trial.set_user_attr(RUN_ID, run_id)
    return _tell(trial, TrialState.FAIL, None, status)


# --- worker ---
# Work, in order of preference: a tuning trial for a cell below its budget; a budget check of a tuned
# cell; a final run. Workers coordinate only through the storage: claims are optimistic and resolved by
# trial number. One with nothing to claim waits while others run trials (they may fail and need redoing,
# or finish a cell whose finals it can then run).
Job = Callable[[], None]
POLL_S = 2.0  # how long a worker with nothing to claim waits before looking again
BASE_VAL_ATTR, BASE_RUN_ATTR = "base_val_acc", "base_run_id"  # a budget check's user attrs
RACE_ROUND_ATTR = "race_round"  # a final's user attr: the racing round it belongs to
RACE_DIGEST_ATTR = "race_digest"  # meta study: digest of the race.json last written to the parent run


@dataclass(frozen=True)
class Enqueued:
    """A slot's trial, enqueued for the first worker to claim: fixed params and user attrs."""

    slot: Slot
    params: dict[str, Any]
    attrs: dict[str, Any] = field(default_factory=dict)


def final_run(
    cell_key: str, seed: int, tuned_from: int, params: dict[str, Any], race_round: int = 1
) -> Enqueued:
    """One final run: a cell's chosen configuration (from tuning trial ``tuned_from``, UNTUNED when the
    cell was not tuned) on one seed."""
    attrs = {
        CELL: cell_key,
        SEED: seed,
        ROLE: names.FINAL,
        TUNED_FROM: tuned_from,
        RACE_ROUND_ATTR: race_round,
    }
    return Enqueued(final_slot(cell_key, seed), params, attrs)


@dataclass(frozen=True)
class RaceGroup:
    """The race of one data size: each arm's seeds and fate, the round reached, the runs due."""

    arms: list[ArmRace]
    rounds: int
    runs: list[Enqueued]


NO_CHOICE = "no completed tuning trial: no configuration to run"
TUNING = "still being tuned"


def _outcomes(
    trials: Sequence[FrozenTrial], cells: Sequence[str], *, max_retries: int
) -> dict[str, dict[int, Outcome]]:
    """cell -> seed -> what the race may read of its final run: done or not, val/acc, cost. Never test."""
    out: dict[str, dict[int, Outcome]] = {cell: {} for cell in cells}
    by_slot: dict[str, list[FrozenTrial]] = {}
    for t in trials:
        by_slot.setdefault(str(t.user_attrs.get(SLOT)), []).append(t)
    for key, mine in by_slot.items():
        cell, _, seed_text = key.rpartition("|seed=")
        if cell not in out:
            continue
        seed = int(seed_text)
        counted = [t for t in mine if is_counted(t)]
        done = bool(counted) or slot_given_up(mine, final_slot(cell, seed), max_retries=max_retries)
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


def slots_done(trials: Sequence[FrozenTrial], slots: Sequence[Slot], *, max_retries: int) -> bool:
    """Nothing running or waiting, and every slot counted or given up: none needs a trial."""
    if any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials):
        return False
    return not any(slot_needs_trial(trials, slot, max_retries=max_retries) for slot in slots)


class _Loop(ABC):
    """What both study modes share: the work loop, enqueued slots and their claims, the graph hint."""

    study_names: list[str]

    def __init__(self, ctx: StudyContext, *, workers: int = 1) -> None:
        self.ctx = ctx
        self.workers = workers
        self.spec = ctx.spec
        self.cells = list(ctx.plan.cells)

    @abstractmethod
    def next_job(self) -> Job | None: ...

    @abstractmethod
    def due(self, cells: Sequence[Cell]) -> tuple[dict[str, int], list[FrozenTrial]]:
        """Of ``cells``: the counted trials each is due in all, and the trials that count toward them."""

    def graph_hint(self, cell: Cell) -> str:
        """``trainer.planned_trials``: the trials this worker will still run on this cell's graph."""
        plan = self.ctx.plan
        graph = plan.facts[cell.key].graph
        due, trials = self.due([c for c in self.cells if plan.facts[c.key].graph == graph])
        done = Counter(str(t.user_attrs.get(CELL)) for t in trials if is_counted(t))
        planned = planned_on_graph(plan, graph, due=due, done=done, workers=self.workers)
        return f"{PLANNED_TRIALS}={planned}"

    def _run(
        self,
        trial: optuna.Trial,
        role: str,
        cell: Cell,
        values: dict[str, Any],
        seed: int,
        *extra: str,
        **fields: Any,
    ) -> None:
        """Train ``trial`` as ``role`` on ``cell`` with the suggested ``values``, ``seed`` and ``extra``
        overrides; ``fields``: the rest of its :class:`TrialPlan`."""
        check = self.spec.budget.check  # run_name reads only a final's seed and a budget check's factor
        plan = TrialPlan(
            role=role,
            optuna_study=trial.study.study_name,
            cell=cell,
            overrides=(
                self.graph_hint(cell),  # first: a trainer.planned_trials of the sweep's own wins
                *cell_overrides(self.spec, cell),
                *param_overrides(values),
                *extra,
                override("seed", seed),
            ),
            run_name=run_name(
                role,
                run_label(self.ctx.plan.facts[cell.key], cell),
                number=trial.number,
                seed=seed,
                factor=None if check is None else check.factor,
            ),
            **fields,
        )
        run_trial(self.ctx, trial, plan)

    def run(self, *, should_stop: Callable[[], bool] = lambda: False) -> None:
        while not should_stop():
            reap(self.ctx, self.study_names)
            job = self.next_job()
            if job is not None:
                job()
            elif self._others_running():
                time.sleep(POLL_S)
            else:
                return

    def _trials(self, name: str) -> list[FrozenTrial]:
        return self.ctx.study(name).get_trials(deepcopy=False)

    def _waiting(self, name: str) -> bool:
        return bool(self.ctx.study(name).get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def _others_running(self) -> bool:
        registry = self.ctx.registry()
        return any(
            self.ctx.alive(t, registry)
            for name in self.study_names
            for t in self.ctx.study(name).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        )

    def _enqueue(self, name: str, due: Sequence[Enqueued]) -> None:
        study = self.ctx.study(name)
        trials = study.get_trials(deepcopy=False)
        for item in due:
            if slot_needs_trial(trials, item.slot, max_retries=self.spec.budget.max_retries):
                study.enqueue_trial(item.params, user_attrs={SLOT: item.slot.key, **item.attrs})

    def _claim(self, name: str) -> Any | None:
        """Pop an enqueued slot's trial; ``None`` (closed unrun) if another worker took the slot first."""
        study = self.ctx.study(name)
        trial = study.ask()  # pops an enqueued slot, or creates a blank trial if another worker was faster
        trial.set_user_attr(WORKER_ATTR, self.ctx.worker)
        trials = self._trials(name)
        frozen = next((t for t in trials if t.number == trial.number), None)
        if trial.user_attrs.get(SLOT) is None or frozen is None or not first_claim(trials, frozen):
            close_unrun(trial, "duplicate", "slot already taken (concurrent claim)")
            return None
        return trial


class TuneThenFinal(_Loop):
    def __init__(self, ctx: StudyContext, *, offset: int = 0, workers: int = 1) -> None:
        super().__init__(ctx, workers=workers)
        shift = offset % len(self.cells)  # workers start on different cells: fewer lost claims
        self.order = self.cells[shift:] + self.cells[:shift]
        studies = [ctx.names.cell(c.key) for c in self.cells]
        checks = [ctx.names.budget_check] if ctx.plan.check_cells else []
        self.study_names = [*studies, *checks, ctx.names.final]

    def cell_status(self, cell: Cell) -> CellStatus:
        return cell_status(
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
            self._enqueue(self.ctx.names.budget_check, self.check_runs())
            if self._waiting(self.ctx.names.budget_check):
                return partial(self.enqueued_one, self.ctx.names.budget_check)
        self._enqueue(self.ctx.names.final, self.final_slots())
        self.publish_race()
        if self._waiting(self.ctx.names.final):
            return partial(self.enqueued_one, self.ctx.names.final)
        return None

    def due(self, cells: Sequence[Cell]) -> tuple[dict[str, int], list[FrozenTrial]]:
        """Each cell's tuning budget, its budget check and its final seeds (those of the race so far)."""
        checked = {c.key for c in self.ctx.plan.check_cells}
        finals = self._trials(self.ctx.names.final) if self.spec.has_finals else []
        checks = self._trials(self.ctx.names.budget_check) if checked else []
        due_finals = (
            Counter(run.slot.cell_key for run in self.final_slots()) if self.spec.has_finals else Counter()
        )
        first_round = len(self.spec.final_seeds) if self.spec.has_finals else 0
        due = {
            c.key: tuning_budget(self.spec, c) + (c.key in checked) + max(due_finals[c.key], first_round)
            for c in cells
        }
        tuning = [t for c in cells for t in self._trials(self.ctx.names.cell(c.key))]
        return due, [*tuning, *finals, *checks]

    def tune_one(self, cell: Cell) -> None:
        name = self.ctx.names.cell(cell.key)
        study = self.ctx.study(name)
        params = cell_search(self.spec, cell)
        salt = len(study.get_trials(deepcopy=False))
        study.sampler = make_sampler(self.spec.sampler, params, cell_key=cell.key, salt=salt)
        study.pruner = make_pruner(self.spec.pruner)
        trial = study.ask()
        trial.set_user_attr(WORKER_ATTR, self.ctx.worker)
        if not claim_within_budget(self._trials(name), trial.number, tuning_budget(self.spec, cell)):
            close_unrun(trial, "over_budget", "over budget (concurrent claim)")
            return
        for key, value in ((ROLE, names.TUNE), (CELL, cell.key)):
            trial.set_user_attr(key, value)
        values = suggest(trial, params)
        self._run(trial, names.TUNE, cell, values, self.spec.tune_seed, prune=self.spec.pruner.name != "none")

    def enqueued_one(self, name: str) -> None:
        """A final or a budget check: a cell's tuned values (enqueued) on a seed. A check runs them with
        ``budget.check.factor`` x the step budget, on the tuning seed, beside the checked run."""
        trial = self._claim(name)
        if trial is None:
            return
        attrs = trial.user_attrs
        cell = cell_by_key(self.cells)[str(attrs[CELL])]
        values = suggest(trial, cell_search(self.spec, cell))
        tags = {TUNED_FROM: str(attrs[TUNED_FROM])}
        if name == self.ctx.names.final:
            tags[names.RACE_ROUND] = str(attrs.get(RACE_ROUND_ATTR, 1))
            source = tuning_cell(self.spec, cell)
            if source != cell:  # budget.tune_at: the configuration was chosen at another data size
                tags[names.TUNED_IN] = source.key
            self._run(trial, names.FINAL, cell, values, int(attrs[SEED]), extra_tags=tags)
            return
        check = self.spec.budget.check
        assert check is not None  # there are check cells only with budget.check
        budget = doubled_budget(self.ctx.plan.facts[cell.key], values, check.factor)
        tags[names.BUDGET_FACTOR] = str(check.factor)
        tags[names.BASE_RUN_ID] = str(attrs.get(BASE_RUN_ATTR) or "")
        metrics = {names.BASE_VAL_ACC: float(attrs[BASE_VAL_ATTR])}
        self._run(
            trial,
            names.BUDGET_CHECK,
            cell,
            values,
            int(attrs[SEED]),
            *budget,
            extra_tags=tags,
            extra_metrics=metrics,
        )

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
        return best_trial(self._trials(self.ctx.names.cell(cell.key)))

    def chosen(self, cell: Cell) -> tuple[int, dict[str, Any]] | None:
        """(tuned-from trial, params) of a cell whose tuning is done; None while it is not, or if it
        chose nothing (every trial failed). With ``budget.tune_at`` the tuning is its counterpart's."""
        source = tuning_cell(self.spec, cell)
        if not self.cell_status(source).done:
            return None
        if tuning_budget(self.spec, source) == 0:  # not tuned: the finals run the cell as configured
            return UNTUNED, {}
        best = self.best(source)
        return None if best is None else (best.number, dict(best.params))

    def final_slots(self) -> list[Enqueued]:
        """The final runs due: every seed for every arm, or with racing, the rounds reached so far."""
        if self.spec.race is None:
            runs = []
            for cell in self.cells:
                chosen = self.chosen(cell)
                if chosen is not None:
                    runs += [final_run(cell.key, seed, *chosen) for seed in self.spec.final_seeds]
            return runs
        return [run for group in self.race_groups() for run in group.runs]

    def race_groups(self) -> list[RaceGroup]:
        """The race of each data size, replayed from the final trials stored so far."""
        trials = self._trials(self.ctx.names.final)
        rounds = race_seeds(self.spec.final_seeds, self.spec.race, tune_seed=self.spec.tune_seed)
        round_of = {seed: n for n, seeds in enumerate(rounds, start=1) for seed in seeds}
        groups: dict[Any, list[Cell]] = {}
        for cell in self.cells:
            groups.setdefault(cell.get(SIZE_FACTOR), []).append(cell)
        out = []
        for size, cells in groups.items():
            chosen = {cell.key: self.chosen(cell) for cell in cells}
            arms = [self._arm(cell, size) for cell in cells if chosen[cell.key] is not None]
            tuning = [c for c in cells if not self.cell_status(tuning_cell(self.spec, c)).done]
            if tuning:  # some arm is still being tuned: round 1 for the others, no decision yet
                state, reached = [ArmRace(arm, seeds=list(rounds[0])) for arm in arms], 1
            else:
                outcomes = _outcomes(trials, [a.cell for a in arms], max_retries=self.spec.budget.max_retries)
                state, reached = run_race(arms, outcomes, rounds)
            unchosen = [
                ArmRace(self._arm(c, size), reason=TUNING if c in tuning else NO_CHOICE)
                for c in cells
                if chosen[c.key] is None
            ]
            runs = []
            for r in state:
                tuned_from, params = chosen[r.arm.cell] or (UNTUNED, {})
                runs += [
                    final_run(r.arm.cell, s, tuned_from, params, race_round=round_of[s]) for s in r.seeds
                ]
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

    def check_runs(self) -> list[Enqueued]:
        """A budget check (the best tuning trial's configuration with a larger step budget) for each
        checked cell whose tuning is done and chose a configuration."""
        runs = []
        for cell in self.ctx.plan.check_cells:
            best = self.best(cell) if self.cell_status(cell).done else None
            if best is not None:
                attrs = {
                    CELL: cell.key,
                    SEED: self.spec.tune_seed,
                    ROLE: names.BUDGET_CHECK,
                    TUNED_FROM: best.number,
                    BASE_VAL_ATTR: float(best.value or 0.0),
                    BASE_RUN_ATTR: str(best.user_attrs.get(RUN_ID, "")),
                }
                runs.append(Enqueued(Slot(cell.key, "budget_check"), dict(best.params), attrs))
        return runs


# --- pareto ---
# One study over all cells, maximise val/acc, minimise device-hours. Every cell gets
# ``budget.trials_per_cell`` trials, enqueued with its factor values fixed; the sampler (NSGA-II by
# default) chooses only the searched values (choosing the factors would give the arms it likes more
# chances: issue 19). The answer, ``study.best_trials``, is printed and tagged ``pareto=true``. No
# pruning: Optuna has no multi-objective pruner.
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


class Pareto(_Loop):
    def __init__(self, ctx: StudyContext, *, workers: int = 1) -> None:
        super().__init__(ctx, workers=workers)
        self.name = ctx.names.pareto
        self.study_names = [self.name]

    def slots(self) -> list[Enqueued]:
        """``trials_per_cell`` slots per cell, its factor values fixed: the fair share of every arm."""
        return [
            Enqueued(Slot(cell.key, f"trial={i}"), dict(cell.values), {CELL: cell.key, ROLE: "tune"})
            for cell in self.cells
            for i in range(self.spec.budget.trials_per_cell)
        ]

    def next_job(self) -> Job | None:
        self._enqueue(self.name, self.slots())
        return self.run_one if self._waiting(self.name) else None

    def due(self, cells: Sequence[Cell]) -> tuple[dict[str, int], list[FrozenTrial]]:
        due = dict.fromkeys((c.key for c in cells), self.spec.budget.trials_per_cell)
        return due, self._trials(self.name)

    def complete(self) -> bool:
        slots = [item.slot for item in self.slots()]
        return slots_done(self._trials(self.name), slots, max_retries=self.spec.budget.max_retries)

    def run_one(self) -> None:
        study = self.ctx.study(self.name)
        # every slot is enqueued up front: count only the trials already claimed, or every trial would
        # be sampled with the same seed
        salt = sum(1 for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING)
        study.sampler = make_sampler(
            self.spec.sampler, [], cell_key="pareto", salt=salt, multi_objective=True
        )
        trial = self._claim(self.name)
        if trial is None:
            return
        cell = cell_from_params(self.spec, suggest_factors(trial, self.spec))  # the enqueued factor values
        values = suggest(trial, cell_search(self.spec, cell))
        self._run(trial, names.TUNE, cell, values, self.spec.tune_seed, objectives=OBJECTIVES)

    def publish(self) -> list[ParetoPoint]:
        """The Pareto set, cheapest first, recorded: meta study attr, ``pareto=true`` on its MLflow runs."""
        study = self.ctx.study(self.name)
        best = study.best_trials if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) else []
        points = [_point(t) for t in sorted(best, key=lambda t: t.values[1])]
        self.ctx.meta.set_user_attr(PARETO_ATTR, [p.number for p in points])
        for point in points:
            if point.run_id:
                self.ctx.runs.set_tags(point.run_id, {"pareto": "true"})
        return points


def _point(trial: FrozenTrial) -> ParetoPoint:
    run_id = trial.user_attrs.get(RUN_ID)
    return ParetoPoint(
        number=trial.number,
        cell=str(trial.user_attrs.get(CELL, "")),
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
