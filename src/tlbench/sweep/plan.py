"""What a sweep will run and the rules it runs by: cells, search spaces, the fair protocol over stored
trials, the plan, the checks against the run config, and the cost estimate.
"""

from __future__ import annotations

import datetime
import itertools
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import BaseTrial, FrozenTrial, TrialState

from tlbench.config import RunConfig, load_config
from tlbench.errors import ConfigError
from tlbench.strategies import ignored_keys
from tlbench.sweep.spec import (
    SIZE_FACTOR,
    Condition,
    Scalar,
    SearchParam,
    SweepSpec,
    format_value,
    override,
    pick_size,
    sweep_error,
)
from tlbench.tracking import names

# --- protocol ---
# Pure functions of Optuna's frozen trials, so every worker (on any machine) reaches the same answer
# from the same storage. A trial *counts* when it is COMPLETE, PRUNED (compute spent is compute spent)
# or FAILed for a property of its configuration; trials that died, were interrupted or lost a claim
# are redone, crashes at most ``max_retries`` times per cell (or final slot).
# user attrs written on every trial
FAIL_KIND, FAIL_REASON = "fail_kind", "fail_reason"
ROLE, CELL, SLOT, SEED, STRATEGY = names.ROLE, names.CELL, "slot", "seed", names.STRATEGY_TAG
TUNED_FROM, RUN_ID, STATUS = names.TUNED_FROM, "mlflow_run_id", names.STATUS

# why a trial failed (FAIL_KIND): "config" (diverged, out of memory, an impossible setting) and
# "collapsed" (trained, but its result is degenerate: at chance, or a loss that ended above its start)
# are properties of the configuration and count toward the budget; neither is ever selected
CONFIG, COLLAPSED = "config", "collapsed"
COUNTED_KINDS = frozenset({CONFIG, COLLAPSED})
RETRY_KINDS = frozenset({"error", "died"})  # bounded by max_retries
# "interrupted", "over_budget", "duplicate": neither counted nor limited

Alive = Callable[[FrozenTrial], bool]


def fail_kind(trial: FrozenTrial) -> str | None:
    return str(trial.user_attrs.get(FAIL_KIND)) if trial.state == TrialState.FAIL else None


def is_counted(trial: FrozenTrial) -> bool:
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and fail_kind(trial) in COUNTED_KINDS


def occupies(trial: FrozenTrial) -> bool:
    """Counted, or may still become counted (running, or enqueued and waiting to be picked up)."""
    return is_counted(trial) or trial.state in (TrialState.RUNNING, TrialState.WAITING)


@dataclass(frozen=True)
class CellStatus:
    budget: int
    counted: int
    running: int  # live RUNNING trials (dead ones are reaped before this is read)
    retries: int  # crashes so far
    max_retries: int

    @property
    def given_up(self) -> bool:
        return self.retries > self.max_retries and self.counted < self.budget

    @property
    def needed(self) -> int:
        return 0 if self.given_up else max(0, self.budget - self.counted - self.running)

    @property
    def done(self) -> bool:
        return self.running == 0 and (self.counted >= self.budget or self.given_up)


def cell_status(trials: Sequence[FrozenTrial], *, budget: int, max_retries: int, alive: Alive) -> CellStatus:
    return CellStatus(
        budget=budget,
        counted=sum(1 for t in trials if is_counted(t)),
        running=sum(1 for t in trials if t.state == TrialState.RUNNING and alive(t)),
        retries=sum(1 for t in trials if fail_kind(t) in RETRY_KINDS),
        max_retries=max_retries,
    )


def claim_within_budget(trials: Sequence[FrozenTrial], number: int, budget: int) -> bool:
    """Optimistic claim: trial ``number`` runs iff fewer than ``budget`` counted-or-running trials precede
    it (numbers are assigned atomically; a dead worker's RUNNING trial counts: never overshoot)."""
    ahead = [t for t in trials if t.number < number and (is_counted(t) or t.state == TrialState.RUNNING)]
    return len(ahead) < budget


UNTUNED = -1  # tuned_from_trial of finals in a sweep without tuning (budget.trials_per_cell: 0)


def best_trial(trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    """Highest validation accuracy among COMPLETE trials; ties go to the earlier trial."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        return None
    return min(complete, key=lambda t: (-float(t.value or 0.0), t.number))


@dataclass(frozen=True)
class Slot:
    """One enqueued piece of work of a cell (a final seed, a budget check, a Pareto trial); its key
    (``<cell>|seed=3``) is stored on the trial, and the first trial to claim a key runs it."""

    cell_key: str
    label: str  # "seed=3" | "budget_x2" | "trial=1"

    @property
    def key(self) -> str:
        return f"{self.cell_key}|{self.label}"


def final_slot(cell_key: str, seed: int) -> Slot:
    """A cell's best configuration on one final seed (key ``<cell>|seed=<seed>``, as stored since issue 5)."""
    return Slot(cell_key, f"seed={seed}")


def slot_trials(trials: Sequence[FrozenTrial], slot: Slot) -> list[FrozenTrial]:
    return [t for t in trials if t.user_attrs.get(SLOT) == slot.key]


def slot_needs_trial(trials: Sequence[FrozenTrial], slot: Slot, *, max_retries: int) -> bool:
    """Nothing covers the slot (no counted, running or waiting trial) and it has retries left."""
    mine = slot_trials(trials, slot)
    retries = sum(1 for t in mine if fail_kind(t) in RETRY_KINDS)
    return not any(occupies(t) for t in mine) and retries <= max_retries


def slot_given_up(trials: Sequence[FrozenTrial], slot: Slot, *, max_retries: int) -> bool:
    mine = slot_trials(trials, slot)
    retries = sum(1 for t in mine if fail_kind(t) in RETRY_KINDS)
    return not any(occupies(t) for t in mine) and retries > max_retries


def first_claim(trials: Sequence[FrozenTrial], trial: FrozenTrial) -> bool:
    """A popped final trial runs iff no earlier trial of its slot occupies it (duplicates lose)."""
    slot = trial.user_attrs.get(SLOT)
    return not any(t.number < trial.number and t.user_attrs.get(SLOT) == slot and occupies(t) for t in trials)


# --- cells ---
# Each cell (one combination of the factors) is tuned in its own Optuna study (``<study>/<cell key>``):
# pruning a slow-starting scratch run against a linear probe's curve would be unfair.
NO_FACTORS_KEY = "base"  # the one cell of a sweep without factors


@dataclass(frozen=True)
class Cell:
    """Factor values of one cell, in the sweep file's factor order."""

    values: tuple[tuple[str, Scalar], ...]

    @property
    def key(self) -> str:
        """Canonical (sorted) ``data.n_per_class=20,strategy=linear_probe``; the study suffix and tag."""
        if not self.values:
            return NO_FACTORS_KEY
        return ",".join(f"{k}={format_value(v)}" for k, v in sorted(self.values))

    def get(self, path: str) -> Scalar:
        return dict(self.values).get(path)

    def matches(self, condition: Condition) -> bool:
        own = dict(self.values)
        return all(path in own and own[path] == value for path, value in condition.items)


def expand_cells(spec: SweepSpec) -> list[Cell]:
    """The cross product of the factors, in file order (first factor varies slowest)."""
    names = spec.factor_names
    return [
        Cell(tuple(zip(names, combo, strict=True)))
        for combo in itertools.product(*(v for _, v in spec.factors))
    ]


def cell_overrides(spec: SweepSpec, cell: Cell) -> list[str]:
    """Base overrides, the command line's, then the cell's factor values, then its ``where`` overrides."""
    out = list(spec.base) + list(spec.overrides) + [override(k, v) for k, v in cell.values]
    for condition, extra in spec.where:
        if cell.matches(condition):
            out.extend(extra)
    return out


def cell_search(spec: SweepSpec, cell: Cell) -> list[SearchParam]:
    """The cell's search space: ``search`` plus matching ``search_where`` (later entries win)."""
    params = {p.path: p for p in spec.search}
    for condition, extra in spec.search_where:
        if cell.matches(condition):
            params.update({p.path: p for p in extra})
    return list(params.values())


def tuning_budget(spec: SweepSpec, cell: Cell) -> int:
    """Counted tuning trials the cell gets: ``trials_per_cell``, the same for every arm; 0 for a cell
    with nothing to search when the sweep has finals (they run it as configured), and with
    ``budget.tune_at`` for the cells of the other data sizes (:func:`tuning_cell`)."""
    if spec.mode == "tune_then_final" and spec.has_finals and not cell_search(spec, cell):
        return 0
    if tuning_cell(spec, cell) != cell:
        return 0
    return spec.budget.trials_per_cell


def tuning_cell(spec: SweepSpec, cell: Cell) -> Cell:
    """The cell whose tuning chooses this cell's configuration: itself, or with ``budget.tune_at``
    its counterpart at the tuning data size (every other factor the same)."""
    sizes = dict(spec.factors).get(SIZE_FACTOR)
    if spec.budget.tune_at is None or sizes is None:
        return cell
    size = pick_size(spec.budget.tune_at, sizes)
    size = next((v for v in sizes if format_value(v) == format_value(size)), size)  # the factor's own value
    return Cell(tuple((k, size if k == SIZE_FACTOR else v) for k, v in cell.values))


def cell_from_params(spec: SweepSpec, params: Mapping[str, Scalar]) -> Cell:
    """Pareto mode: the cell a trial's sampled factor values fall in."""
    return Cell(tuple((name, params[name]) for name in spec.factor_names if name in params))


def cell_by_key(cells: Iterable[Cell]) -> dict[str, Cell]:
    return {cell.key: cell for cell in cells}


# --- space ---
# Optuna parameter names are the config paths (``optimizer.lr``): the dashboard, the stored trials and
# the overrides a trial ran with use one vocabulary.
def distribution(param: SearchParam) -> BaseDistribution:
    if param.choices is not None:
        return CategoricalDistribution(list(param.choices))
    assert param.low is not None and param.high is not None  # guaranteed by the parser
    if param.integer:
        step = int(param.step) if param.step is not None else 1
        return IntDistribution(int(param.low), int(param.high), log=param.log, step=step)
    return FloatDistribution(param.low, param.high, log=param.log, step=param.step)


def suggest(trial: BaseTrial, params: Iterable[SearchParam]) -> dict[str, Any]:
    """Sample (or, for enqueued final trials, read back) each parameter's value."""
    values: dict[str, Any] = {}
    for param in params:
        dist = distribution(param)
        if isinstance(dist, CategoricalDistribution):
            values[param.path] = trial.suggest_categorical(param.path, dist.choices)
        elif isinstance(dist, IntDistribution):
            values[param.path] = trial.suggest_int(
                param.path, dist.low, dist.high, step=dist.step, log=dist.log
            )
        else:
            assert isinstance(dist, FloatDistribution)
            values[param.path] = trial.suggest_float(
                param.path, dist.low, dist.high, step=dist.step, log=dist.log
            )
    return values


def suggest_factors(trial: BaseTrial, spec: SweepSpec) -> dict[str, Scalar]:
    """Pareto mode: the crossed factors become categorical parameters of the one study."""
    return {name: trial.suggest_categorical(name, list(values)) for name, values in spec.factors}


def param_overrides(values: Mapping[str, Any]) -> list[str]:
    return [override(path, value) for path, value in values.items()]


def grid_space(params: Iterable[SearchParam]) -> dict[str, list[Any]]:
    """GridSampler's search space (every parameter has choices: checked by the loader)."""
    return {p.path: list(p.choices or ()) for p in params}


# --- phases: the trials planned per phase, and what a stored trial took ---
NOT_RUN = frozenset({"over_budget", "duplicate"})  # lost claims: never trained, not shown


def planned_trials(spec: SweepSpec, *, budget_checks: int = 0) -> dict[str, int]:
    """Trials per phase; ``budget_checks``: how many arms get a budget check (from the study's plan)."""
    cells = expand_cells(spec)
    if spec.mode == "pareto":
        return {"pareto": len(cells) * spec.budget.trials_per_cell}
    planned = {"tune": sum(tuning_budget(spec, cell) for cell in cells)}
    if budget_checks:
        planned["check"] = budget_checks
    if spec.has_finals:
        planned["final"] = len(cells) * len(spec.final_seeds)
    return planned


def wall_seconds(trial: FrozenTrial) -> float | None:
    """Wall seconds from claim to result (None while a trial runs or if it never started)."""
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


# --- plan ---
# Each cell is composed once to learn what only the config knows: its strategy, whether it trains by
# steps (a budget a check can double), its budget, and the graph its trials train (how many trials
# reuse one compiled graph). Every worker derives the same plan from the same definition.
Graph = tuple[str, str, int, str, int | None]  # backbone, resolution, batch size, strategy, freeze depth


@dataclass(frozen=True)
class CellFacts:
    """What one cell's composed config says about its trials."""

    strategy: str
    trains_by_steps: bool  # an SGD loop with a step budget (not as_is, not the L-BFGS probe)
    min_steps: int | None
    epochs: int
    graph: Graph
    probe_first: bool = False  # a linear probe (or lp_ft's) is fitted on extracted features first
    batch_size: int = 32
    val_checks: int | None = None
    n_per_class: int | None = None  # None: all of the training pool

    @classmethod
    def of(cls, cfg: RunConfig) -> CellFacts:
        strategy = cfg.strategy.name.value
        solver = cfg.strategy.probe.solver.value
        ignored = ignored_keys(strategy, probe_solver=solver)
        return cls(
            strategy=strategy,
            trains_by_steps="optimizer." not in ignored,  # no optimizer: nothing trains by steps
            min_steps=cfg.trainer.min_steps,
            epochs=cfg.trainer.epochs,
            probe_first="strategy.probe." not in ignored and solver == "lbfgs",
            batch_size=cfg.trainer.batch_size,
            val_checks=cfg.trainer.val_checks,
            n_per_class=cfg.data.n_per_class,
            graph=(
                cfg.backbone.name,
                str(cfg.data.resolution or "pretrained"),
                cfg.trainer.batch_size,
                strategy,
                cfg.strategy.freeze_depth,
            ),
        )


@dataclass(frozen=True)
class SweepPlan:
    """The cells of a study, their facts, and what each phase will run."""

    cells: tuple[Cell, ...]
    facts: Mapping[str, CellFacts]  # cell key -> facts
    check_cells: tuple[Cell, ...]  # cells whose chosen configuration gets a budget check
    phases: Mapping[str, int]  # trials planned per phase (finals: the first racing round's)


def plan_sweep(spec: SweepSpec) -> SweepPlan:
    cells = tuple(expand_cells(spec))
    facts = {}  # each cell composed once (searched values at the low end, as the check does)
    for cell in cells:
        lows = [low_override(p) for p in cell_search(spec, cell)]
        facts[cell.key] = CellFacts.of(load_config([*cell_overrides(spec, cell), *lows]))
    checks = tuple(budget_check_cells(spec, cells, facts))
    phases = planned_trials(spec, budget_checks=len(checks))
    return SweepPlan(cells=cells, facts=facts, check_cells=checks, phases=phases)


def budget_check_cells(spec: SweepSpec, cells: Sequence[Cell], facts: Mapping[str, CellFacts]) -> list[Cell]:
    """The tuned cells at the check's data size whose strategy trains by steps (one per arm there),
    or only ``budget.check.strategies`` among them: a sample of the arms."""
    check = spec.budget.check
    if check is None or not spec.has_finals:
        return []
    sizes = dict(spec.factors).get(SIZE_FACTOR)
    size = pick_size(check.size, sizes) if sizes else None
    return [
        cell
        for cell in cells
        if tuning_budget(spec, cell) > 0
        and facts[cell.key].trains_by_steps
        and (sizes is None or cell.get(SIZE_FACTOR) == size)
        and (not check.strategies or facts[cell.key].strategy in check.strategies)
    ]


def doubled_budget(facts: CellFacts, params: Mapping[str, object], factor: int) -> list[str]:
    """Overrides that multiply a cell's step budget (and epochs) by ``factor``, from the chosen value
    where the budget is searched (``trainer.min_steps`` or ``trainer.epochs`` in ``params``)."""
    steps = params.get("trainer.min_steps", facts.min_steps)
    epochs = params.get("trainer.epochs", facts.epochs)
    out = [f"trainer.epochs={int(epochs) * factor}"]  # type: ignore[call-overload]
    if steps:
        out.append(f"trainer.min_steps={int(steps) * factor}")  # type: ignore[call-overload]
    return out


PLANNED_TRIALS = "trainer.planned_trials"


def planned_on_graph(
    plan: SweepPlan, graph: Graph, *, due: Mapping[str, int], done: Mapping[str, int], workers: int
) -> int:
    """How many trials one worker will still run on ``graph`` (this one included): the trials due
    minus done over every cell that trains that graph, shared by the workers (``trainer.planned_trials``,
    from which ``trainer.compile=auto`` decides whether a compile pays for itself)."""
    left = sum(
        max(0, due.get(key, 0) - done.get(key, 0))
        for key, facts in plan.facts.items()
        if facts.graph == graph
    )
    return max(1, math.ceil(left / max(1, workers)))


SHORT_FACTORS = {"strategy.freeze_depth": "k"}  # run names: a short name where one is customary


def run_label(facts: CellFacts, cell: Cell) -> str:
    """``lp_ft n=5`` plus the cell's other factors, briefly (``full_finetune n=all efficientnet_lite1``)."""
    n = "all" if facts.n_per_class is None else str(facts.n_per_class)
    parts = [facts.strategy, f"n={n}"]
    for path, value in cell.values:
        if path in ("strategy", SIZE_FACTOR):
            continue
        if isinstance(value, str):
            parts.append(value)
        else:
            parts.append(f"{SHORT_FACTORS.get(path, path.rsplit('.', 1)[-1])}={format_value(value)}")
    return " ".join(parts)


def run_name(
    role: str, label: str, *, number: int, seed: int | None = None, factor: int | None = None
) -> str:
    """Readable and unique within a study: ``tune lp_ft n=5 #3``, ``lp_ft n=5 seed=2``,
    ``check lp_ft n=5 x2`` (a budget check)."""
    if role == names.FINAL:
        return f"{label} seed={seed}"
    if role == names.BUDGET_CHECK:
        return f"check {label} x{factor}"
    return f"{role} {label} #{number}"


# --- check ---
# Only Hydra knows which paths and values exist: each cell is composed once (searched values at their
# low end / first choice) and, on failure, piece by piece, to name the factor, ``where`` or search key.
def low_override(param: SearchParam) -> str:
    """The parameter at the low end of its range (its first choice), as a Hydra override."""
    value = param.choices[0] if param.choices is not None else param.low
    if param.integer and value is not None:
        value = int(value)
    return override(param.path, value)


def _high(param: SearchParam) -> list[str]:
    if param.choices is not None:
        return [override(param.path, choice) for choice in param.choices[1:]]
    value = int(param.high) if param.integer and param.high is not None else param.high
    return [override(param.path, value)]


def _compose(overrides: Sequence[str]) -> RunConfig | ConfigError:
    try:
        return load_config(overrides)
    except ConfigError as exc:
        return exc


def _explain(spec: SweepSpec, cell: Cell, params: list[SearchParam], error: ConfigError) -> ConfigError:
    """Compose piece by piece to say which part of the sweep file is wrong."""
    base = list(spec.base)
    if isinstance(_compose(base), ConfigError):
        return sweep_error(spec.name, f"base overrides: {error}")
    base += spec.overrides
    result = _compose(base)
    if isinstance(result, ConfigError):
        return sweep_error(spec.name, f"command-line overrides ({' '.join(spec.overrides)}): {result}")
    for path, value in cell.values:
        result = _compose([*base, override(path, value)])
        if isinstance(result, ConfigError):
            return sweep_error(spec.name, f"factor '{path}' (value {value!r}): {result}")
    fixed = cell_overrides(spec, cell)
    if isinstance(_compose(fixed), ConfigError):
        return sweep_error(spec.name, f"cell {cell.key} (with its 'where' overrides): {error}")
    for param in params:
        result = _compose([*fixed, low_override(param)])
        if isinstance(result, ConfigError):
            return sweep_error(spec.name, f"search key '{param.path}': {result}")
    return sweep_error(spec.name, f"cell {cell.key}: {error}")


def first_cell_config(spec: SweepSpec) -> RunConfig:
    """The first cell's config, unchecked beyond composition (workers of an already checked sweep)."""
    return load_config(cell_overrides(spec, expand_cells(spec)[0]))


def check_searched_keys(spec: SweepSpec, cell: Cell, params: Sequence[SearchParam], cfg: RunConfig) -> None:
    """Refuse a searched key the cell's strategy never reads (:func:`tlbench.strategies.ignored_keys`):
    its tuning trials would all be one config."""
    name = cfg.strategy.name.value
    ignored = ignored_keys(name, probe_solver=cfg.strategy.probe.solver.value)
    for param in params:
        prefix = next((p for p in ignored if param.path.startswith(p)), None)
        if prefix is None:
            continue
        where = f" (in {spec.source})" if spec.source else ""
        raise sweep_error(
            spec.name,
            f"strategy {name} ignores '{param.path}', which cell {cell.key} searches: its tuning trials "
            f"would all train the same model; search another key for {name} under "
            f"search_where['strategy={name}'] (e.g. strategy.probe.l2 for a linear probe){where}",
        )


def check_lora(spec: SweepSpec, cell: Cell, cfg: RunConfig, checked: set[tuple[str, str]]) -> None:
    """A lora cell whose backbone has no layer for the adapters fails here, not mid-sweep (built on
    torch's meta device, each backbone and lora config once)."""
    if cfg.strategy.name.value != "lora":
        return
    key = (cfg.backbone.name, repr(cfg.strategy.lora))
    if key in checked:
        return
    from tlbench.training.network import check_lora as lora_targets  # torch and timm: only for lora cells

    try:
        lora_targets(cfg.backbone.name, cfg.strategy.lora)
    except ConfigError as exc:
        raise sweep_error(spec.name, f"cell {cell.key}: {exc}") from None
    checked.add(key)


def check_against_config(spec: SweepSpec) -> RunConfig:
    """Compose every cell; returns the first cell's config (its tracking settings are the study's)."""
    cells = expand_cells(spec)
    first: RunConfig | None = None
    lora_checked: set[tuple[str, str]] = set()
    for index, cell in enumerate(cells):
        params = cell_search(spec, cell)
        fixed = cell_overrides(spec, cell)
        result = _compose([*fixed, *(low_override(p) for p in params)])
        if isinstance(result, ConfigError):
            raise _explain(spec, cell, params, result)
        check_searched_keys(spec, cell, params, result)
        check_lora(spec, cell, result, lora_checked)
        if index == 0:
            first = result
            for param in params:  # the other end of each range, and every other choice, once
                for text in _high(param):
                    other = _compose([*fixed, text])
                    if isinstance(other, ConfigError):
                        raise sweep_error(spec.name, f"search key '{param.path}' ({text}): {other}")
    assert first is not None  # there is always at least one cell
    if not first.tracking.enabled:
        raise sweep_error(
            spec.name, "sweeps record every trial in MLflow: remove tracking=disabled from base"
        )
    return first


# --- estimate ---
# Before the first trial the supervisor times a few training steps and evaluation batches of the
# study's backbone, in process CPU seconds over the threads used (the cost rule of cost/device_hours:
# another process's load does not inflate it). A planned trial's device time is then its images
# through the network (an upper bound: step budgets are maxima under early stopping). While the study
# runs, the ETA scales those estimates by how long finished trials took against theirs, less what
# running trials spent; each ETA is logged (``eta.jsonl``) for :func:`eta_errors`.
ETA_LOG = "eta.jsonl"
# Seconds of a trial outside its images: config, model build, MLflow run, tracking writes (measured: trial
# wall minus fit seconds, 3.6 s per trial over a 22-trial synthetic study on the loaded 2-core machine).
TRIAL_OVERHEAD_S = 3.0
PROBE_FRACTION = {  # share of a full training step a strategy's step costs (frozen parts: forward only)
    "partial": 0.7,  # a cached frozen prefix: only the suffix trains (half depth at most here)
}


@dataclass(frozen=True)
class Throughput:
    """Device seconds per image: one training image (forward, backward, step) and one evaluated image."""

    train_s: float
    eval_s: float
    what: str  # what was measured, for the plan's header


def measure_throughputs(plan: SweepPlan, *, num_classes: int, threads: int) -> dict[Graph, Throughput]:
    """One probe per distinct (backbone, resolution, batch size) among the cells; strategies share it."""
    from tlbench.training.network import pretrained_input_size

    measured: dict[tuple[str, int, int], Throughput] = {}
    out = {}
    for facts in plan.facts.values():
        backbone, resolution, batch = facts.graph[0], facts.graph[1], facts.graph[2]
        side = int(resolution) if resolution.isdigit() else pretrained_input_size(backbone)
        key = (backbone, side, batch)
        if key not in measured:
            measured[key] = measure_throughput(
                backbone, resolution=side, batch_size=batch, num_classes=num_classes, threads=threads
            )
        out[facts.graph] = measured[key]
    return out


def measure_throughput(
    backbone: str, *, resolution: int, batch_size: int, num_classes: int, threads: int, steps: int = 3
) -> Throughput:
    """Time ``steps`` training steps and evaluation batches of a randomly initialised backbone (random
    weights cost what pretrained ones do; channels_last on a CNN, as the trials)."""
    import timm
    import torch

    torch.set_num_threads(threads)
    model = timm.create_model(backbone, pretrained=False, num_classes=num_classes)
    images = torch.randn(batch_size, 3, resolution, resolution)
    labels = torch.randint(0, num_classes, (batch_size,))
    if any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    def eval_step() -> None:
        with torch.inference_mode():
            model(images)

    model.train()
    train_step()  # warm-up: first-call allocations and kernel selection
    train = _cpu_seconds(train_step, steps) / threads
    model.eval()
    eval_step()
    evaluate = _cpu_seconds(eval_step, steps) / threads
    what = f"{backbone} at {resolution} px, batch {batch_size}, {threads} thread(s), CPU seconds / threads"
    return Throughput(train / (steps * batch_size), evaluate / (steps * batch_size), what)


def _cpu_seconds(step: Any, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        step()
    return time.process_time() - start


def data_counts(spec: SweepSpec) -> DataCounts:
    """Split sizes of the sweep's dataset: decodes it once (cached in the process for its trials)."""
    from tlbench.data import load_splits
    from tlbench.training.network import pretrained_input_size

    try:
        cfg = load_config([*spec.base, *spec.overrides, "data.n_per_class=null"])
    except ConfigError as exc:
        raise sweep_error(spec.name, f"base and command-line overrides: {exc}") from None
    data = cfg.data  # at the resolution the trials decode it at (the backbone's when null): cached for them
    if data.resolution is None:
        data = replace(data, resolution=pretrained_input_size(cfg.backbone.name))
    splits = load_splits(data, seed=spec.tune_seed)
    pool = splits.train.labels.bincount(minlength=splits.num_classes)
    return DataCounts(
        tuple(int(c) for c in pool), len(splits.val), len(splits.test), data.root or data.name.value
    )


@dataclass(frozen=True)
class DataCounts:
    """Images per split, as the sweep's data gives them (the validation and test splits never change)."""

    pool_per_class: tuple[int, ...]  # training pool, per class
    val: int
    test: int
    where: str = ""  # the dataset: its folder or name

    def train_images(self, n_per_class: int | None) -> int:
        if n_per_class is None:
            return sum(self.pool_per_class)
        return sum(min(n_per_class, c) for c in self.pool_per_class)


def trial_seconds(facts: CellFacts, counts: DataCounts, n_per_class: int | None, tp: Throughput) -> float:
    """Estimated device seconds of one trial of a cell (an upper bound under early stopping)."""
    n_train = counts.train_images(n_per_class)
    evaluate = TRIAL_OVERHEAD_S + (counts.val + counts.test) * tp.eval_s
    if not facts.trains_by_steps and facts.strategy == "as_is":
        return evaluate
    extract = (n_train + counts.val + counts.test) * tp.eval_s if facts.probe_first else 0.0
    if not facts.trains_by_steps:  # the L-BFGS probe: one extraction, then a fit on features (seconds)
        return TRIAL_OVERHEAD_S + extract
    steps_per_epoch = max(1, math.ceil(n_train / facts.batch_size))
    steps = max(facts.epochs * steps_per_epoch, facts.min_steps or 0)
    epochs = math.ceil(steps / steps_per_epoch)
    checks = min(facts.val_checks or epochs, epochs)
    train = steps * facts.batch_size * tp.train_s * PROBE_FRACTION.get(facts.strategy, 1.0)
    return extract + train + checks * counts.val * tp.eval_s + evaluate


@dataclass(frozen=True)
class WorkItem:
    """A planned trial (or several alike): its phase, cell and estimated device seconds each."""

    phase: str
    cell: str
    count: int
    seconds: float


def work_items(
    spec: SweepSpec, plan: SweepPlan, counts: DataCounts, throughput: Mapping[Graph, Throughput]
) -> list[WorkItem]:
    """Every planned trial (racing finals: the first round) with its estimated device seconds."""
    items = []
    checked = {c.key for c in plan.check_cells}
    factor = spec.budget.check.factor if spec.budget.check is not None else 1
    for cell in plan.cells:
        facts = plan.facts[cell.key]
        size = cell.get(SIZE_FACTOR)
        n = size if isinstance(size, int) and not isinstance(size, bool) else None
        seconds = trial_seconds(facts, counts, n, throughput[facts.graph])
        if spec.mode == "pareto":
            items.append(WorkItem("pareto", cell.key, spec.budget.trials_per_cell, seconds))
            continue
        items.append(WorkItem("tune", cell.key, tuning_budget(spec, cell), seconds))
        if cell.key in checked:
            items.append(WorkItem("check", cell.key, 1, seconds * factor))
        if spec.has_finals:
            items.append(WorkItem("final", cell.key, len(spec.final_seeds), seconds))
    return items


def trial_states(
    trials_by_phase: Mapping[str, Sequence[FrozenTrial]], *, now: datetime.datetime
) -> tuple[list[Finished], list[Running]]:
    """Finished trials (wall seconds, claim to result) and running ones (seconds so far) by phase and
    cell; enqueued ones (a racing round's finals, not claimed yet) count as running for 0 s."""
    finished, running = [], []
    for phase, trials in trials_by_phase.items():
        for t in trials:
            cell = str(t.user_attrs.get(CELL, ""))
            if t.state == TrialState.WAITING:
                running.append(Running(phase, cell, 0.0, waiting=True))
                continue
            if fail_kind(t) in NOT_RUN or t.datetime_start is None:
                continue
            if t.state == TrialState.RUNNING:
                running.append(Running(phase, cell, (now - t.datetime_start).total_seconds()))
            elif (wall := wall_seconds(t)) is not None and is_counted(t):
                finished.append(Finished(phase, cell, wall))
    return finished, running


@dataclass(frozen=True)
class Finished:
    phase: str
    cell: str
    wall_s: float


@dataclass(frozen=True)
class Running:
    phase: str
    cell: str
    elapsed_s: float
    waiting: bool = False  # enqueued, not claimed yet


def countdown(
    items: Sequence[WorkItem],
    finished: Sequence[Finished],
    running: Sequence[Running],
    *,
    workers: int,
) -> float:
    """Seconds left: the remaining planned trials' estimates, scaled by how long finished trials took
    against theirs, less what running trials have already spent, shared by the workers."""
    estimate = {(i.phase, i.cell): i.seconds for i in items}
    known = [(f.wall_s, estimate[(f.phase, f.cell)]) for f in finished if (f.phase, f.cell) in estimate]
    spent, expected = sum(w for w, _ in known), sum(e for _, e in known)
    scale = spent / expected if expected > 0 and spent > 0 else 1.0
    started: dict[tuple[str, str], int] = {}
    keys = [(f.phase, f.cell) for f in finished] + [(r.phase, r.cell) for r in running]
    for key in keys:  # running includes enqueued trials: a racing round adds finals
        started[key] = started.get(key, 0) + 1
    left = sum(max(0, i.count - started.get((i.phase, i.cell), 0)) * i.seconds for i in items) * scale
    in_flight = sum(max(0.0, estimate.get((r.phase, r.cell), 0.0) * scale - r.elapsed_s) for r in running)
    return (left + in_flight) / max(1, workers)


def eta_errors(
    path: Path, *, fractions: Sequence[float] = (0.25, 0.5, 0.75)
) -> dict[float, dict[str, float]]:
    """How far off the ETA was at each fraction of a finished study's wall time (its end: the ``final``
    record): ``error_s`` = predicted - actual remaining seconds (positive: too pessimistic), and
    ``relative`` = error / actual remaining."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    end = next((r for r in reversed(records) if r.get("final")), None)
    if end is None:
        raise ValueError(f"{path} has no final record: the study's command has not ended yet")
    start_time = end["time"] - end["elapsed_s"]
    total = end["time"] - start_time
    out: dict[float, dict[str, float]] = {}
    estimates = [r for r in records if not r.get("final") and r.get("eta_s") is not None]
    for fraction in fractions:
        moment = start_time + fraction * total
        if not estimates:
            break
        nearest = min(estimates, key=lambda r: abs(r["time"] - moment))
        actual = end["time"] - nearest["time"]
        error = float(nearest["eta_s"]) - actual
        out[fraction] = {
            "at_s": round(nearest["time"] - start_time, 1),
            "eta_s": float(nearest["eta_s"]),
            "actual_remaining_s": round(actual, 1),
            "error_s": round(error, 1),
            "relative": round(error / actual, 3) if actual > 0 else math.nan,
        }
    return out


def format_plan(
    phases: Mapping[str, int],
    seconds: float | None,
    tp: Throughput | None,
    *,
    workers: int,
    race_extra: int = 0,
) -> str:
    """The plan's header line: trials per phase and the estimated device time (racing: its first round)."""
    trials = ", ".join(f"{n} {phase}" for phase, n in phases.items() if n)
    if race_extra:
        trials += f" (+ up to {race_extra} more racing finals for undecided arms)"
    if seconds is None or tp is None:
        return f"plan: {trials} trials"
    minutes = seconds / 60
    return (
        f"plan: {trials} trials; about {minutes:.0f} device-minutes at most (step budgets are maxima), "
        f"about {minutes / max(1, workers):.0f} min with {workers} worker(s) on an otherwise idle machine\n"
        f"  throughput: {tp.train_s:.3f} s per training image, {tp.eval_s:.4f} s per evaluated image "
        f"({tp.what})"
    )
