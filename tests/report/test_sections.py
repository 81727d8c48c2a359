"""The Methods section's protocol parts: tuning per arm, "trained enough", the cost rule, the race."""

from __future__ import annotations

import json
from collections.abc import Callable

import pandas as pd
import pytest

from tlbench.report.render import Callout, Paragraph, Table
from tlbench.report.sections import budget_blocks, cost_rule, race_blocks, tuning_blocks
from tlbench.report.tables import parse_race, searched_ranges

Trials = Callable[..., pd.DataFrame]

SWEEP = """
search:
  optimizer.lr: {low: 0.001, high: 0.03, log: true}
search_where:
  strategy=linear_probe: {strategy.probe.l2: {low: 1.0e-4, high: 1.0, log: true}}
  strategy=lp_ft,data.n_per_class=5: {optimizer.lr: {low: 1.0e-5, high: 1.0e-3, log: true}}
budget: {trials_per_cell: 2}
"""


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        # the base search alone
        ("data.n_per_class=5,strategy=scratch", ("`optimizer.lr` 0.001–0.03 (log)",)),
        # a strategy's own extra key, added to the base search
        ("data.n_per_class=5,strategy=linear_probe",
         ("`optimizer.lr` 0.001–0.03 (log)", "`strategy.probe.l2` 0.0001–1 (log)")),
        # a two-factor condition replaces the base range of the same key
        ("data.n_per_class=5,strategy=lp_ft", ("`optimizer.lr` 1e-05–0.001 (log)",)),
        ("data.n_per_class=10,strategy=lp_ft", ("`optimizer.lr` 0.001–0.03 (log)",)),  # condition not met
    ],
)  # fmt: skip
def test_searched_ranges_follow_the_sweep_definition(cell: str, expected: tuple[str, ...]) -> None:
    assert searched_ranges(SWEEP, cell) == expected


def test_searched_ranges_without_a_definition() -> None:
    # no sweep.yaml (or not YAML): said, never guessed
    assert searched_ranges(None, "strategy=scratch") is None and searched_ranges(":\n -", "x=1") is None


def _tuned(trials: Trials, counts: dict[str, int]) -> pd.DataFrame:
    rows = [
        {"role": "tune", "strategy": s, "n": "5", "val_acc": 0.5, "cell": f"data.n_per_class=5,strategy={s}"}
        for s, n in counts.items()
        for _ in range(n)
    ]
    return trials(*rows)


def test_tuning_protocol_says_whether_arms_were_tuned_alike(trials: Trials) -> None:
    blocks = tuning_blocks(_tuned(trials, {"linear_probe": 2, "lp_ft": 2}), SWEEP)
    text = " ".join(b.text for b in blocks if isinstance(b, Paragraph))
    table = next(b for b in blocks if isinstance(b, Table))
    # the same number of trials per arm: said; each arm's searched ranges in its row
    assert "Every arm with something to tune had the same tuning budget: 2 trials" in text
    assert table.rows[1] == ("n=5/class", "lp_ft", "2 (2 completed)", "`optimizer.lr` 1e-05–0.001 (log)")
    unequal = tuning_blocks(_tuned(trials, {"linear_probe": 1, "lp_ft": 3}), SWEEP)
    # unequal budgets: said, with the range and what the sweep asked for
    assert "Tuning budgets differ between arms (1–3 trials)" in unequal[1].text  # type: ignore[union-attr]
    assert "asked for 2 per arm" in unequal[1].text  # type: ignore[union-attr]


def test_tuning_at_one_size_is_not_a_smaller_budget_at_the_others(trials: Trials) -> None:
    # the photo protocol (budget.tune_at: largest) tunes all data and runs that choice at n=5: the n=5
    # arms' 0 trials are the carried choice, not an unequal budget; as_is has nothing to search
    rows = [
        {
            "role": "tune",
            "strategy": s,
            "n": "all",
            "val_acc": 0.5,
            "cell": f"data.n_per_class=null,strategy={s}",
        }
        for s in ("linear_probe", "full_finetune")
        for _ in range(3)
    ] + [
        {"role": "final", "strategy": s, "n": n, "val_acc": 0.5, "cell": f"data.n_per_class={c},strategy={s}"}
        for s in ("linear_probe", "full_finetune", "as_is")
        for n, c in (("5", "5"), ("all", "null"))
    ]
    sweep = """
search_where:
  strategy=linear_probe: {strategy.probe.l2: {low: 1.0e-4, high: 1.0, log: true}}
  strategy=full_finetune: {optimizer.lr: {low: 1.0e-4, high: 1.0e-2, log: true}}
budget: {trials_per_cell: 3, tune_at: largest}
"""
    blocks = tuning_blocks(trials(*rows), sweep)
    text = " ".join(b.text for b in blocks if isinstance(b, Paragraph))
    table = next(b for b in blocks if isinstance(b, Table))
    assert "Every arm with something to tune had the same tuning budget: 3 trials" in text
    assert "Tuned at one data size (`budget.tune_at: largest`)" in text and "differ" not in text
    by_arm = {(r[0], r[1]): r[2] for r in table.rows}
    assert by_arm[("n=5/class", "full_finetune")] == "0 (the choice at all data)"
    assert by_arm[("n=5/class", "as_is")] == "0"


def _checks(trials: Trials, changes: list[float]) -> pd.DataFrame:
    rows = [
        {
            "role": "budget_check",
            "strategy": s,
            "n": "5",
            "val_acc": 0.7 + d,
            "base_val": 0.7,
            "budget_factor": 2,
        }
        for s, d in zip(("linear_probe", "full_finetune", "lp_ft"), changes, strict=False)
    ]
    return trials(*rows)


@pytest.mark.parametrize(
    ("changes", "phrase"),
    [
        # all within a point: "at most X points over k arms"
        ([0.004, -0.008], "by at most 0.8 pp over 2 arm(s): the budgets were enough"),
        # one arm moved by 3 points: named, with the change
        ([0.004, 0.03], "by more than 1.0 pp for 1 of 2 arm(s): full_finetune at n=5/class (+3.0 pp)"),
    ],
)  # fmt: skip
def test_budget_check_verdict(trials: Trials, changes: list[float], phrase: str) -> None:
    blocks = budget_blocks(_checks(trials, changes), tolerance=0.01)
    assert phrase in blocks[1].text  # type: ignore[union-attr]


def test_no_budget_check_is_said(trials: Trials) -> None:
    blocks = budget_blocks(trials({"role": "final", "test_acc": 0.5}), tolerance=0.01)
    # absent evidence is stated, not implied
    assert "ran no budget check" in blocks[1].text  # type: ignore[union-attr]


def test_failed_budget_check_is_listed(trials: Trials) -> None:
    table = trials({"role": "budget_check", "strategy": "lp_ft", "n": "5", "status": "failed: diverged",
                    "base_val": 0.7, "budget_factor": 2})  # fmt: skip
    blocks = budget_blocks(table, tolerance=0.01)
    assert "No budget check completed" in blocks[1].text  # type: ignore[union-attr]
    assert blocks[2].rows[0][4] == "diverged"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("rules", "phrase"),
    [
        (["cpu: process CPU seconds / 2 threads"] * 2, "As logged: `cpu: process CPU seconds / 2 threads`."),
        ([None, None], "fit wall-clock seconds × devices / 3600 (runs without a `device_hours_rule` tag"),
        (["gpu: wall x 1 device", None], "`gpu: wall x 1 device`; 1 run(s): fit wall-clock"),
    ],
)
def test_cost_rule_is_what_the_runs_logged(trials: Trials, rules: list[str | None], phrase: str) -> None:
    rows = [{"test_acc": 0.5, "fit_seconds": 30.0, **({"device_hours_rule": r} if r else {})} for r in rules]
    text = cost_rule(trials(*rows))
    # the rule in words, the rule as logged, and wall-clock apart
    assert "on a CPU the fit's process CPU seconds ÷ the threads it used" in text and phrase in text
    assert "`cost/fit_seconds`: 60.0 s of fitting" in text


RACE = {
    "rule": "retire an arm credibly worse on validation than one costing no more", "cap": 8, "rounds": 3,
    "arms": [
        {"cell": "c1", "strategy": "linear_probe", "n_per_class": "5",
         "factors": {"strategy": "linear_probe"}, "seeds": [1, 2, 3, 4, 5, 6], "retired_round": None,
         "reason": "still undecided at the cap"},
        {"cell": "c2", "strategy": "scratch", "n_per_class": "5",
         "factors": {"strategy": "scratch", "data.n_per_class": 5, "backbone": "lite1"}, "seeds": [1, 2],
         "retired_round": 1, "reason": "credibly worse on validation than linear_probe (−12.0 pp)"},
    ],
}  # fmt: skip


def test_race_table_from_race_json() -> None:
    blocks = race_blocks(json.dumps(RACE))
    table = next(b for b in blocks if isinstance(b, Table))
    # arm (with its other factor values), seeds run, round retired, why
    assert table.rows == (
        ("n=5/class", "linear_probe", "6 (1, 2, 3, 4, 5, 6)", "—", "still undecided at the cap"),
        (
            "n=5/class",
            "scratch, lite1",
            "2 (1, 2)",
            "1",
            "credibly worse on validation than linear_probe (−12.0 pp)",
        ),
    )
    rule = blocks[1].text  # type: ignore[union-attr]
    assert "at most 8 seeds per arm, 3 round(s)" in rule and "validation accuracy only" in rule


def test_no_race_no_table_and_a_bad_one_is_said() -> None:
    assert race_blocks(None) == [] and parse_race(None) is None
    blocks = race_blocks('{"arms": [{"seeds": [1]}]}')
    # not the schema: the report says so instead of showing a guess
    assert isinstance(blocks[1], Callout) and "race.json is not the racing record" in blocks[1].text
