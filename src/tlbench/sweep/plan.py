"""What a study will run, known before its first trial: each cell's facts and the trials per phase.

Each cell is composed once (its fixed overrides, no searched value) to learn what only the config
knows: its strategy, whether it trains by steps (and so has a step budget a budget check can double),
its budget, and the graph its trials train (backbone, resolution, batch, trained part), which tells a
worker how many trials will reuse one compiled graph. The plan is computed once per process; every
worker derives the same one from the same definition.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tlbench.config import RunConfig, load_config
from tlbench.strategies import ignored_keys
from tlbench.sweep.cells import Cell, cell_overrides, cell_search, expand_cells, tuning_budget
from tlbench.sweep.check import low_override
from tlbench.sweep.progress import planned_trials
from tlbench.sweep.spec import SIZE_FACTOR, SweepSpec, format_value, pick_size

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

    @property
    def budget_checks(self) -> int:
        return len(self.check_cells)


def cell_facts(spec: SweepSpec, cells: Sequence[Cell]) -> dict[str, CellFacts]:
    """Compose each cell once (searched values at the low end, as the check does)."""
    facts = {}
    for cell in cells:
        lows = [low_override(p) for p in cell_search(spec, cell)]
        facts[cell.key] = CellFacts.of(load_config([*cell_overrides(spec, cell), *lows]))
    return facts


def plan_sweep(spec: SweepSpec) -> SweepPlan:
    cells = tuple(expand_cells(spec))
    facts = cell_facts(spec, cells)
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
    """Overrides that multiply a cell's step budget (and epochs, for a budget in epochs) by ``factor``.

    A searched budget (``trainer.min_steps`` or ``trainer.epochs`` in ``params``) is multiplied from
    the chosen value.
    """
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
    if role == "final":
        return f"{label} seed={seed}"
    if role == "budget_check":
        return f"check {label} x{factor}"
    return f"{role} {label} #{number}"
