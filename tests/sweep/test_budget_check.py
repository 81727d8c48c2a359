"""The budget check: each tuned arm's chosen configuration re-run with twice its step budget (issue 19)."""

from __future__ import annotations

from typing import Any

import pytest

from tlbench.commands.sweep import main as sweep_main
from tlbench.errors import ConfigError
from tlbench.sweep.plan import (
    CELL,
    CellFacts,
    best_trial,
    doubled_budget,
    expand_cells,
    plan_sweep,
    tuning_budget,
    tuning_cell,
)
from tlbench.sweep.spec import parse_sweep
from tlbench.tracking import names

from .conftest import TINY_BASE, SweepWriter

LR = {"optimizer.lr": {"low": 1e-3, "high": 0.1, "log": True}}
CHECKED: dict[str, Any] = {
    "factors": {"strategy": ["linear_probe", "partial"], "data.n_per_class": [4, 8]},
    "where": {"strategy=partial": ["strategy.freeze_depth=6"]},
    "search": LR,
    "budget": {"trials_per_cell": 2, "check": {"factor": 2, "size": "largest"}},
    "final": {"seeds": [1]},
}


@pytest.mark.parametrize(
    ("budget", "final", "message"),
    [
        ({"check": {"factor": 1}}, {"seeds": [1]}, "budget.check.factor must be an integer >= 2, got 1"),
        (
            {"check": {"size": "biggest"}},
            {"seeds": [1]},
            "budget.check.size must be largest, smallest or one of 4, 8",
        ),
        ({"check": {"size": 5}}, {"seeds": [1]}, "got 5"),
        (
            {"check": {"factor": "two"}},
            {"seeds": [1]},
            "budget.check.factor must be an integer >= 2, got 'two'",
        ),
        ({"check": {}}, {}, "budget.check re-runs each arm's tuned configuration before its finals"),
        ({"tune_at": "biggest"}, {"seeds": [1]}, "budget.tune_at must be largest, smallest or one of 4, 8"),
        (
            {"check": {"strategies": ["lp_ft"]}},
            {"seeds": [1]},
            "budget.check.strategies names 'lp_ft', which is not among the sweep's strategies",
        ),
        ({"tune_at": "largest"}, {}, "budget.tune_at carries one data size's tuning to the others' finals"),
        (
            {"tune_at": 4, "check": {"size": 8}},
            {"seeds": [1]},
            "budget.check.size (8) must be budget.tune_at (4)",
        ),
    ],
)
def test_a_bad_budget_check_is_one_line_naming_the_key(
    budget: dict[str, Any], final: dict[str, Any], message: str
) -> None:
    # out-of-range or misplaced settings fail when the file is read, before anything runs
    data = {**CHECKED, "base": TINY_BASE, "budget": {"trials_per_cell": 2, **budget}, "final": final}
    with pytest.raises(ConfigError) as info:
        parse_sweep(data, name="bad")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_tune_at_tunes_one_size_and_carries_its_choice() -> None:
    # only the cells at the tuning size are tuned; each other cell takes its counterpart's choice
    data = {**CHECKED, "base": TINY_BASE, "budget": {"trials_per_cell": 3, "tune_at": "smallest"}}
    spec = parse_sweep(data, name="t")
    budgets = {c.key: (tuning_budget(spec, c), tuning_cell(spec, c).key) for c in expand_cells(spec)}
    assert budgets == {
        "data.n_per_class=4,strategy=linear_probe": (3, "data.n_per_class=4,strategy=linear_probe"),
        "data.n_per_class=8,strategy=linear_probe": (0, "data.n_per_class=4,strategy=linear_probe"),
        "data.n_per_class=4,strategy=partial": (3, "data.n_per_class=4,strategy=partial"),
        "data.n_per_class=8,strategy=partial": (0, "data.n_per_class=4,strategy=partial"),
    }
    no_size = {**data, "factors": {"strategy": ["linear_probe", "partial"]}}
    with pytest.raises(ConfigError, match=r"data\.n_per_class is not a factor of this sweep"):
        parse_sweep(no_size, name="t")


def test_the_check_covers_each_arm_that_trains_by_steps_at_one_size() -> None:
    # largest size only; a linear probe fitted by L-BFGS has no step budget to double, so it is skipped
    data = {**CHECKED, "base": [*TINY_BASE[:2], *TINY_BASE[3:]]}  # without strategy.probe.solver=sgd
    plan = plan_sweep(parse_sweep(data, name="c"))
    assert [c.key for c in plan.check_cells] == ["data.n_per_class=8,strategy=partial"]
    assert plan.phases == {"tune": 8, "check": 1, "final": 4}
    smallest = {**data, "budget": {"trials_per_cell": 2, "check": {"size": "smallest"}}}
    assert [c.key for c in plan_sweep(parse_sweep(smallest, name="c")).check_cells] == [
        "data.n_per_class=4,strategy=partial"
    ]
    # a sample of the arms: only the strategies listed
    sgd = {
        **CHECKED,
        "base": TINY_BASE,
        "budget": {"trials_per_cell": 2, "check": {"strategies": ["linear_probe"]}},
    }
    assert [c.key for c in plan_sweep(parse_sweep(sgd, name="c")).check_cells] == [
        "data.n_per_class=8,strategy=linear_probe"
    ]


@pytest.mark.parametrize(
    ("min_steps", "epochs", "params", "expected"),
    [
        (100, 1, {}, ["trainer.epochs=2", "trainer.min_steps=200"]),  # a step budget
        (None, 8, {}, ["trainer.epochs=16"]),  # a budget in epochs
        (
            100,
            1,
            {"trainer.min_steps": 40},
            ["trainer.epochs=2", "trainer.min_steps=80"],
        ),  # a searched budget
    ],
)
def test_doubled_budget(
    min_steps: int | None, epochs: int, params: dict[str, Any], expected: list[str]
) -> None:
    # the budget the check multiplies is whatever bounds the fit, searched or fixed
    facts = CellFacts(
        strategy="partial",
        trains_by_steps=True,
        min_steps=min_steps,
        epochs=epochs,
        graph=("b", "32", 32, "partial", 6),
    )
    assert doubled_budget(facts, params, 2) == expected


def test_budget_checks_run_after_tuning_and_record_the_checked_run(
    write_sweep: SweepWriter, reader: Any
) -> None:
    # tuned at the largest size only (budget.tune_at), whose choice the other size's finals run; the
    # checked arm: one run on the tuning seed with twice the epochs, tagged and linked to its base run
    # (linear probes trained by SGD on cached features: the cheapest arms with a step budget)
    budget = {"trials_per_cell": 2, "tune_at": "largest", "check": {"factor": 2}}
    sweep = {**CHECKED, "factors": {"data.n_per_class": [4, 8]}, "where": {}, "budget": budget}
    assert sweep_main(["--sweep", str(write_sweep("checked", **sweep))]) == 0
    study = reader("checked")
    assert study.trials("data.n_per_class=4") == [] and len(study.trials("data.n_per_class=8")) == 2
    best8 = best_trial(study.trials("data.n_per_class=8"))
    assert best8 is not None
    finals = study.children(names.FINAL)
    assert sorted(r.data.tags[names.CELL] for r in finals) == ["data.n_per_class=4", "data.n_per_class=8"]
    for run in finals:  # both sizes run the configuration chosen at 8
        assert float(run.data.params["lr"]) == pytest.approx(best8.params["optimizer.lr"])
        assert run.data.tags[names.TUNED_FROM] == str(best8.number)
        carried = run.data.tags[names.CELL] == "data.n_per_class=4"
        assert run.data.tags.get(names.TUNED_IN) == ("data.n_per_class=8" if carried else None)
    checks = study.trials("budget_check")
    assert [t.user_attrs[CELL] for t in checks] == ["data.n_per_class=8"]
    names_ = sorted(r.info.run_name for r in study.children())
    assert names_ == [
        "check linear_probe n=8 x2",
        "linear_probe n=4 seed=1",
        "linear_probe n=8 seed=1",
        "tune linear_probe n=8 #0",
        "tune linear_probe n=8 #1",
    ]
    runs = {r.data.tags[names.CELL]: r for r in study.children(names.BUDGET_CHECK)}
    tune_runs = {r.info.run_id: r for r in study.children(names.TUNE)}
    for cell, run in runs.items():
        best = best_trial(study.trials(cell))
        assert best is not None
        base = tune_runs[run.data.tags[names.BASE_RUN_ID]]
        assert base.data.tags["trial_number"] == str(best.number)  # the checked run is the cell's best
        assert run.data.metrics[names.BASE_VAL_ACC] == pytest.approx(best.value)
        assert names.VAL_ACC in run.data.metrics
        assert run.data.tags[names.BUDGET_FACTOR] == "2" and run.data.params["seed"] == "0"
        assert int(run.data.params["epochs"]) == 2 * int(base.data.params["epochs"])
        assert run.data.params["lr"] == base.data.params["lr"]
    assert study.parents()[0].info.status == "FINISHED"
