"""Cells: one combination of the crossed factors, with its fixed overrides and its search space.

Each cell is tuned in its own Optuna study (``<study>/<cell key>``) so the sampler and the pruner
compare trials only with trials of the same strategy and data size: pruning a slow-starting
scratch run against a linear probe's curve would be unfair.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tlbench.sweep.spec import (
    SIZE_FACTOR,
    Condition,
    Scalar,
    SearchParam,
    SweepSpec,
    format_value,
    pick_size,
)

NO_FACTORS_KEY = "base"  # the one cell of a sweep without factors


def override(path: str, value: Scalar) -> str:
    return f"{path}={format_value(value)}"


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
    """Counted tuning trials the cell gets: the sweep's ``trials_per_cell``, the same for every arm.

    A cell with nothing to search (``as_is``, which trains nothing) is not tuned when the sweep has
    finals: its finals run it as configured. Repeating one configuration as "tuning" would only
    spend compute on identical trials. With ``budget.tune_at``, only the cells of that data size are
    tuned; the others take their counterpart's choice (:func:`tuning_cell`).
    """
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
