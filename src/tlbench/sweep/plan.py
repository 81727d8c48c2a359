"""What a study will run, known before its first trial: each cell's facts and the trials per phase.

Each cell is composed once (its fixed overrides, no searched value) to learn what only the config
knows: its strategy, whether it trains by steps (and so has a step budget a budget check can double),
its budget, and the graph its trials train (backbone, resolution, batch, trained part), which tells a
worker how many trials will reuse one compiled graph. The plan is computed once per process; every
worker derives the same one from the same definition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tlbench.config import RunConfig, load_config
from tlbench.strategies import ignored_keys
from tlbench.sweep.cells import Cell, cell_overrides, cell_search, expand_cells, tuning_budget
from tlbench.sweep.check import low_override
from tlbench.sweep.progress import planned_trials
from tlbench.sweep.spec import SIZE_FACTOR, SweepSpec, pick_size

Graph = tuple[str, str, int, str, int | None]  # backbone, resolution, batch size, strategy, freeze depth


@dataclass(frozen=True)
class CellFacts:
    """What one cell's composed config says about its trials."""

    strategy: str
    trains_by_steps: bool  # an SGD loop with a step budget (not as_is, not the L-BFGS probe)
    min_steps: int | None
    epochs: int
    graph: Graph

    @classmethod
    def of(cls, cfg: RunConfig) -> CellFacts:
        strategy = cfg.strategy.name.value
        ignored = ignored_keys(strategy, probe_solver=cfg.strategy.probe.solver.value)
        return cls(
            strategy=strategy,
            trains_by_steps="optimizer." not in ignored,  # no optimizer: nothing trains by steps
            min_steps=cfg.trainer.min_steps,
            epochs=cfg.trainer.epochs,
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
    """The tuned cells at the check's data size whose strategy trains by steps (one per arm there)."""
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
