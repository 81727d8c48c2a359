from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
import pytest

from tlbench.report.summarize import cell_gaps, outcome_counts, run_cost, study_totals, summary_table

Trials = Callable[..., pd.DataFrame]


def test_summary_uses_only_completed_final_runs(trials: Trials) -> None:
    table = trials(
        {"test_acc": 0.8, "hours": 1.0},
        {"test_acc": 0.9, "hours": 3.0},
        {"role": "tune", "test_acc": 0.1, "val_acc": 0.99},  # a tuning trial's test accuracy: ignored
        {"status": "failed: diverged", "test_acc": 0.0},  # a failed final run: ignored
        {"status": "pruned", "test_acc": 0.0},  # pruned: ignored
    )
    row = summary_table(table).iloc[0]
    # the mean and costs of the two completed final seeds only
    assert (row["seeds"], row["acc_mean"], row["device_hours"]) == (2, pytest.approx(0.85), 2.0)


def test_summary_ci_and_single_seed(trials: Trials) -> None:
    table = trials(
        *({"strategy": "linear_probe", "test_acc": a} for a in (0.7, 0.8, 0.9)),
        {"strategy": "scratch", "test_acc": 0.5},
    )
    summary = summary_table(table).set_index("strategy")
    # three seeds: Student-t half-width t(0.975, 2) * sd / sqrt(3)
    assert summary.loc["linear_probe", "acc_ci"] == pytest.approx(4.302652729911275 * 0.1 / math.sqrt(3))
    # one seed: no interval (NaN), and the seed count says why
    assert math.isnan(summary.loc["scratch", "acc_ci"]) and summary.loc["scratch", "seeds"] == 1


def test_best_is_marked_per_size_and_ties_share_it(trials: Trials) -> None:
    table = trials(
        {"strategy": "linear_probe", "n": "10", "test_acc": 0.7},
        {"strategy": "scratch", "n": "10", "test_acc": 0.6},
        {"strategy": "linear_probe", "n": "all", "test_acc": 0.9},
        {"strategy": "scratch", "n": "all", "test_acc": 0.9},
    )
    best = {(r.n_per_class, r.strategy): r.best for r in summary_table(table).itertuples()}
    # the best per size, not overall; an exact tie marks both
    assert best == {
        ("10", "linear_probe"): True, ("10", "scratch"): False,
        ("all", "linear_probe"): True, ("all", "scratch"): True,
    }  # fmt: skip


def test_summary_orders_sizes_numerically_then_all(trials: Trials) -> None:
    table = trials(*({"n": n, "test_acc": 0.5} for n in ("all", "100", "5", "20")))
    # 5 < 20 < 100 < all, not string order
    assert summary_table(table)["n_per_class"].tolist() == ["5", "20", "100", "all"]


def test_summary_of_study_without_final_runs_is_empty(trials: Trials) -> None:
    # nothing final: an empty table with the expected columns, not an exception
    summary = summary_table(trials({"role": "tune", "val_acc": 0.5}))
    assert summary.empty and "best" in summary.columns


def test_outcome_counts(trials: Trials) -> None:
    table = trials(
        {}, {"status": "pruned", "role": "tune"}, {"status": "failed: oom", "role": "tune"}, {"role": "tune"}
    )
    counts = outcome_counts(table)
    # one row per role, every outcome column present even when zero
    assert counts.loc["tune"].to_dict() == {
        "completed": 1,
        "pruned": 1,
        "failed": 1,
        "interrupted": 0,
        "running": 0,
        "total": 3,
    }
    assert counts.loc["final", "total"] == 1


def test_cell_gaps_name_missing_and_single_seed_cells(trials: Trials) -> None:
    table = trials(
        {"strategy": "linear_probe", "n": "10", "test_acc": 0.5},
        {"strategy": "linear_probe", "n": "10", "test_acc": 0.6},
        {"strategy": "scratch", "n": "10", "test_acc": 0.4},  # single seed
        {"strategy": "scratch", "n": "all", "status": "failed: oom"},  # no completed final run
        {"strategy": "linear_probe", "n": "all", "test_acc": 0.9},  # single seed
    )
    gaps = {(g.strategy, g.n_per_class): (g.final_completed, g.final_other) for g in cell_gaps(table)}
    # (linear_probe, 10) has two seeds and is fine; the others are reported with what happened
    assert gaps == {
        ("scratch", "10"): (1, {}),
        ("linear_probe", "all"): (1, {}),
        ("scratch", "all"): (0, {"failed": 1}),
    }


def test_totals_include_pruned_and_failed_compute(trials: Trials) -> None:
    table = trials(
        {"hours": 1.0},
        {"status": "pruned", "role": "tune", "hours": 0.5},
        {"status": "failed: x", "hours": 0.25},
    )
    totals = study_totals(table)
    # every trial spent real device time, whatever its outcome
    assert totals.device_hours == 1.75 and totals.device_hours_by_role == {"final": 1.25, "tune": 0.5}


def test_run_cost_prefers_standalone_and_falls_back() -> None:
    # a run that reused cached features is charged its standalone cost; runs without it keep the spent cost
    frame = pd.DataFrame(
        {
            "cost/device_hours": [1.0, 2.0, 3.0],
            "cost/standalone_device_hours": [1.5, float("nan"), 3.0],
        }
    )
    assert run_cost(frame, "device_hours").tolist() == [1.5, 2.0, 3.0]
    assert run_cost(frame.drop(columns="cost/standalone_device_hours"), "device_hours").tolist() == [1, 2, 3]
