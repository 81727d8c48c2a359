from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.cases import SweepPlan
from benchmarks.sweep_cost import (
    CellSummary,
    SweepRun,
    TrialCost,
    accuracy_gap_points,
    best_case_fraction,
    reduced_sweep,
    summarize,
)
from benchmarks.timing import Sample
from tlbench.errors import ConfigError
from tlbench.sweep.spec import parse_sweep

DEFAULT = yaml.safe_load((Path(__file__).resolve().parents[2] / "sweeps" / "default.yaml").read_text())
CELLS = {"strategy": ["linear_probe", "full_finetune"], "data.n_per_class": [5]}


def test_reduced_default_sweep_keeps_its_protocol_on_fewer_cells() -> None:
    # same search space, sampler, pruner and budget; 2 cells; no finals; still a valid sweep file
    mapping = reduced_sweep(DEFAULT, SweepPlan(cells=CELLS), extra_base=["trainer.num_threads=1"])
    spec = parse_sweep(mapping, name="bench")
    assert [dict(f) for f in [spec.factors]] == [
        {"strategy": ("linear_probe", "full_finetune"), "data.n_per_class": (5,)}
    ]
    assert not spec.final_seeds
    assert spec.pruner.name == DEFAULT["pruner"]["name"] and spec.sampler.name == DEFAULT["sampler"]["name"]
    assert spec.budget.trials_per_cell == DEFAULT["budget"]["trials_per_cell"]
    assert spec.base[-1] == "trainer.num_threads=1" and spec.base[: len(DEFAULT["base"])] == tuple(
        DEFAULT["base"]
    )
    conditions = [c.text for c, _ in spec.where]
    assert "strategy=partial" not in conditions  # its factor value is gone
    # only the kept strategies' search spaces remain, in the file's order
    assert [c.text for c, _ in spec.search_where] == ["strategy=linear_probe", "strategy=full_finetune"]


def test_unpruned_copy_differs_only_by_its_pruner() -> None:
    pruned = reduced_sweep(DEFAULT, SweepPlan(cells=CELLS))
    unpruned = reduced_sweep(DEFAULT, SweepPlan(cells=CELLS), pruned=False)
    assert unpruned["pruner"] == {"name": "none"}
    assert {k: v for k, v in pruned.items() if k != "pruner"} == {
        k: v for k, v in unpruned.items() if k != "pruner"
    }


def test_base_can_be_replaced_for_tiny_runs() -> None:
    mapping = reduced_sweep(DEFAULT, SweepPlan(cells=CELLS, base=("data=synthetic",)), extra_base=["x=1"])
    assert mapping["base"] == ["data=synthetic", "x=1"]


@pytest.mark.parametrize(
    ("cells", "match"), [({"nope": [1]}, "not in the sweep"), ({"strategy": ["magic"]}, "not among")]
)
def test_unknown_cells_are_rejected(cells: dict[str, list[Any]], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        reduced_sweep(DEFAULT, SweepPlan(cells=cells))


def test_summary_counts_pruned_compute_and_picks_the_best_completed_trial() -> None:
    trials = [
        TrialCost("a", "COMPLETE", 2.0, 12, 0.80),
        TrialCost("a", "PRUNED", 0.5, 3, 0.90),  # pruned: its compute counts, its accuracy does not
        TrialCost("b", "COMPLETE", 1.0, 12, 0.50),
    ]
    cells = {c.cell: c for c in summarize(trials)}
    assert cells["a"] == CellSummary("a", trials=2, pruned=1, device_hours=2.5, epochs=15, best_val_acc=0.80)
    assert cells["b"].best_val_acc == 0.50


@pytest.mark.parametrize(
    ("epochs", "trials", "rung", "expected"),
    [(12, 3, 3, (12 + 3 + 3) / 36), (5, 3, 3, (5 + 3 + 3) / 15), (2, 3, 3, 1.0), (12, 1, 3, 1.0)],
)
def test_best_case_fraction_is_the_first_trial_plus_the_others_cut_at_the_first_rung(
    epochs: int, trials: int, rung: int, expected: float
) -> None:
    assert best_case_fraction(epochs=epochs, trials=trials, first_rung=rung) == pytest.approx(expected)


def test_accuracy_gap_is_the_worst_cell_drop_in_points() -> None:
    def run(accs: dict[str, float | None]) -> SweepRun:
        cells = [CellSummary(k, 3, 0, 1.0, 9, v) for k, v in accs.items()]
        return SweepRun("s", True, Sample(1.0, 1.0), cells)

    gap = accuracy_gap_points(run({"a": 0.80, "b": 0.70}), run({"a": 0.80, "b": 0.72}))
    assert gap == pytest.approx(2.0)
    assert accuracy_gap_points(run({"a": None}), run({"a": 0.5})) is None  # nothing to compare
