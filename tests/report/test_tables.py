"""The trials table (MLflow records -> rows, outcomes, collapse, arm labels) and the pure tables: the
summary, outcome counts, gaps, totals; the screen against training."""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
import pytest

from tlbench.report.render import Table, sorted_strategies
from tlbench.report.sections import screen_blocks
from tlbench.report.tables import (
    BEST_SCOPE,
    METRIC_COLUMNS,
    PARAM_COLUMNS,
    POOLED_SCOPE,
    agreements,
    cell_gaps,
    label_arms,
    outcome,
    outcome_counts,
    picks,
    run_cost,
    screen_table,
    study_totals,
    summary_table,
    trained_accuracy,
    trials_table,
)
from tlbench.tracking.study import RunRecord

from .screen_fixture import BACKBONES, final_runs, screen_runs


@pytest.mark.parametrize(
    ("status", "mlflow_status", "expected"),
    [
        ("completed", "FINISHED", "completed"),
        ("pruned", "FINISHED", "pruned"),  # pruned runs now end FINISHED: the tag says pruned
        ("pruned", "KILLED", "pruned"),  # ... and in older studies KILLED
        ("failed: diverged", "FAILED", "failed"),  # the reason stays in the status column
        ("failed: collapsed: at chance", "FAILED", "failed"),  # collapse is a failure
        ("running", "RUNNING", "running"),  # a trial in progress
        ("running", "KILLED", "interrupted"),  # stopped (Ctrl-C): redone on resume, not a failure
        ("failed: interrupted", "KILLED", "interrupted"),  # what an interrupted fit logs
        ("running", "FAILED", "failed"),  # ended without updating its status: a failure, not a result
        ("", "FINISHED", "failed"),  # no status tag at all: never counted as a result
    ],
)
def test_outcome(status: str, mlflow_status: str, expected: str) -> None:
    assert outcome(status, mlflow_status) == expected


def test_empty_table_has_every_column() -> None:
    # a study without trials still gives a table every report function accepts
    table = trials_table([])
    assert table.empty
    assert set(PARAM_COLUMNS) | set(METRIC_COLUMNS) <= set(table.columns)


def test_numeric_params_parse_only_when_all_values_do(trials: Callable[..., pd.DataFrame]) -> None:
    table = trials(
        {"lr": "0.001", "seed": "1", "freeze_depth": "2"}, {"lr": "1e-2", "seed": "2", "freeze_depth": "x"}
    )
    # every lr parses: floats; every seed parses: integers
    assert table["lr"].tolist() == [0.001, 0.01] and table["seed"].tolist() == [1, 2]
    # one freeze_depth does not parse: the logged strings are kept, never turned into NaN
    assert table["freeze_depth"].tolist() == ["2", "x"]


def test_tags_fill_in_missing_params() -> None:
    # strategy and n_per_class are tags too: a run without the params still lands in the right cell
    run = RunRecord(
        "r", "t", "FINISHED", 0, 1, params={}, metrics={}, tags={"strategy": "scratch", "n_per_class": "5"}
    )
    row = trials_table([run]).iloc[0]
    assert (row["strategy"], row["n_per_class"]) == ("scratch", "5")


def test_extra_params_and_metrics_are_kept() -> None:
    # a new param or metric logged by a later tlbench still reaches results.csv
    run = RunRecord("r", "t", "FINISHED", 0, 1, params={"zz_new": "1"}, metrics={"cost/new": 2.0}, tags={})
    table = trials_table([run])
    assert table.loc[0, "zz_new"] == 1 or table.loc[0, "zz_new"] == "1"
    assert table.loc[0, "cost/new"] == 2.0


def _run(status: str, val: float, tags: dict[str, str] | None = None, **params: str) -> RunRecord:
    return RunRecord(
        "r", "t", "FINISHED", 0, 1, params={"n_classes": "10", "n_val": "200", **params},
        metrics={"val/acc": val}, tags={"status": status, **(tags or {})},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("run", "reason", "expected"),
    [
        # the trial's own verdict: tag and status, its reason kept
        (_run("failed: collapsed: loss ended above its start", 0.5, {"collapsed": "true"}),
         "loss ended above its start", "failed"),
        # a collapsed tag wins over a completed status: a failure, whatever else the run logged
        (_run("completed", 0.5, {"collapsed": "true", "collapse_reason": "at chance"}), "at chance",
         "failed"),
        # an older run at chance: 10 classes, 200 images -> chance 10%, noise up to 14.2%
        (_run("completed", 0.14), "within noise of chance (10.0% for 10 classes", "failed"),
        (_run("completed", 0.15), None, "completed"),  # just above the noise: a (weak) result
        (_run("completed", 0.14, n_classes="?"), None, "completed"),  # classes unknown: no check possible
        (_run("pruned", 0.10), None, "pruned"),  # a pruned trial's accuracy is partial: not judged
    ],
)  # fmt: skip
def test_collapse_is_a_failure(run: RunRecord, reason: str | None, expected: str) -> None:
    row = trials_table([run]).iloc[0]
    assert bool(row["collapsed"]) is (reason is not None) and (reason or "") in str(row["collapse_reason"])
    assert row["outcome"] == expected


# --- arms: strategy x the resolution or backbone a study varies ---------------------------------------------


def _trials(resolutions: list[int]) -> pd.DataFrame:
    n = len(resolutions)
    return pd.DataFrame(
        {
            "role": ["final"] * n,
            "strategy": pd.array(["linear_probe", "scratch"] * (n // 2), dtype="string"),
            "backbone": ["tf_efficientnet_lite0"] * n,
            "resolution": resolutions,
        }
    )


def test_a_study_at_one_resolution_keeps_plain_strategies() -> None:
    trials = _trials([224, 224, 224, 224])
    assert label_arms(trials) is trials


def test_varying_resolution_makes_each_combination_an_arm() -> None:
    # 2 strategies x 2 resolutions -> 4 arms, the plain strategy kept alongside
    labelled = label_arms(_trials([64, 64, 224, 224]))
    assert list(labelled["strategy"]) == [
        "linear_probe, 64px",
        "scratch, 64px",
        "linear_probe, 224px",
        "scratch, 224px",
    ]
    assert list(labelled["strategy_name"]) == ["linear_probe", "scratch"] * 2
    # arms sort with their strategy (linear_probe before scratch), then by label
    assert sorted_strategies(labelled["strategy"])[:2] == ["linear_probe, 224px", "linear_probe, 64px"]


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


# --- the screen against training ----------------------------------------------------------------------------


def _tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    return screen_table(screen_runs()), trained_accuracy(trials_table(final_runs()))


def test_trained_accuracy_is_the_mean_over_final_seeds() -> None:
    # two seeds at acc -+ 0.01: the mean is the stated accuracy, per (backbone, strategy)
    _, trained = _tables()
    row = trained[(trained["backbone"] == BACKBONES[0]) & (trained["strategy"] == "full_finetune")]
    assert float(row["test_acc"].iloc[0]) == pytest.approx(0.92) and int(row["seeds"].iloc[0]) == 2
    assert len(trained) == 6


@pytest.mark.parametrize(
    ("score", "scope", "tau"),
    [
        ("screen/logme", "linear_probe", 1.0),  # same order
        ("screen/logme", "full_finetune", -1.0),  # reversed
        ("screen/logme", BEST_SCOPE, -1 / 3),  # one concordant pair of three
        ("screen/knn_acc", BEST_SCOPE, 1.0),
    ],
)
def test_kendall_tau_known_answers(score: str, scope: str, tau: float) -> None:
    # tau-b worked out by hand from study_fixture's numbers; Spearman agrees in sign
    found = {(a.score, a.scope): a for a in agreements(*_tables())}
    agreement = found[(score, scope)]
    assert agreement.n == 3
    assert agreement.kendall_tau == pytest.approx(tau)
    assert math.copysign(1, agreement.spearman_rho) == math.copysign(1, tau)


def test_pooled_scope_uses_every_cell_with_ties_in_the_screen_score() -> None:
    # 6 cells, the screen score repeated across a backbone's strategies: tau-b stays in [-1, 1], finite
    found = {(a.score, a.scope): a for a in agreements(*_tables())}
    pooled = found[("screen/logme", POOLED_SCOPE)]
    assert pooled.n == 6 and -1.0 <= pooled.kendall_tau <= 1.0 and math.isfinite(pooled.kendall_tau)


def test_picks_say_whether_the_screen_found_the_trained_best() -> None:
    # LogME would pick lite2 (0.90 at best), training found lite0 (0.92); kNN picks lite0
    chosen = {p.score: p for p in picks(*_tables())}
    assert chosen["screen/logme"].screen_pick == BACKBONES[2] and not chosen["screen/logme"].same
    assert chosen["screen/logme"].regret == pytest.approx(0.02)
    assert chosen["screen/knn_acc"].same and chosen["screen/knn_acc"].regret == 0


def test_latest_screen_of_a_backbone_wins() -> None:
    # a backbone screened twice counts once, with its newest scores
    runs = screen_runs()
    newer = runs[0].__class__(**{**runs[0].__dict__, "run_id": "again", "start_time_ms": 999,
                                 "metrics": {**runs[0].metrics, "screen/logme": 0.5}})  # fmt: skip
    table = screen_table([*runs, newer])
    assert len(table) == 3
    assert float(table.loc[table["backbone"] == BACKBONES[0], "screen/logme"].iloc[0]) == 0.5


def test_section_states_tau_and_the_verdict() -> None:
    # the blocks carry the tau table (with the best-strategy row) and a sentence per score
    blocks = screen_blocks(*_tables(), None)
    tables = [b for b in blocks if isinstance(b, Table)]
    assert len(tables) == 2
    tau_rows = {row[0]: row for row in tables[1].rows}
    assert tau_rows[BEST_SCOPE][2].startswith("-0.33") and tau_rows[BEST_SCOPE][3].startswith("+1.00")
    text = " ".join(getattr(b, "text", "") for b in blocks)
    assert "1 of 2 screen scores that pick one pick the backbone training found best" in text


def test_a_tie_at_the_top_is_not_a_pick() -> None:
    # two backbones share the best kNN score: the screen chose nothing, and says so
    screen, trained = _tables()
    screen.loc[screen["backbone"] == BACKBONES[2], "screen/knn_acc"] = 0.9  # = lite0's
    knn = {p.score: p for p in picks(screen, trained)}["screen/knn_acc"]
    assert knn.tied == (BACKBONES[0], BACKBONES[2]) and not knn.same


def _phase() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A study's screen phase: kNN kept lite0 and lite2, dropped lite1; only the kept ones trained."""
    runs = []
    for run in screen_runs():
        kept = run.params["backbone"] != BACKBONES[1]
        reason = "kept: kNN rank ≤ 2 (keep 2)" if kept else "dropped: kNN (validation) rank 3 of 3 (keep 2)"
        tags = {**run.tags, "screen_kept": "true" if kept else "false", "screen_reason": reason}
        runs.append(run.__class__(**{**run.__dict__, "tags": tags}))
    finals = [r for r in final_runs() if r.params["backbone"] != BACKBONES[1]]
    return screen_table(runs), trained_accuracy(trials_table(finals))


def test_screen_phase_ranks_beside_training_with_tau_and_the_dropped() -> None:
    from tlbench.report.render import Bullets, Paragraph
    from tlbench.report.sections import phase_blocks

    screen, trained = _phase()
    blocks = phase_blocks(screen, trained, ["screen/logme", "screen/knn_acc"])
    # the dropped backbone with its reason
    (dropped,) = [b for b in blocks if isinstance(b, Bullets)]
    assert dropped.items == (f"`{BACKBONES[1]}`: dropped: kNN (validation) rank 3 of 3 (keep 2)",)
    # ranks: trained backbones first (training's order), the screen's rank by each score beside them
    (table,) = [b for b in blocks if isinstance(b, Table)]
    assert [row[:5] for row in table.rows] == [
        (BACKBONES[0], "kept", "3", "1", "1"),  # LogME ranks lite0 last, kNN first; training first
        (BACKBONES[2], "kept", "1", "2", "2"),
        (BACKBONES[1], "dropped", "2", "3", "—"),
    ]
    # tau over the two trained backbones: LogME disagrees (-1), kNN agrees (+1)
    text = " ".join(b.text for b in blocks if isinstance(b, Paragraph))
    assert "over the 2 backbones that were trained: LogME -1.00, kNN (validation) +1.00" in text
    assert "(±1 only)" in text


def test_a_plain_screen_has_no_phase_blocks() -> None:
    # screen runs without screen_kept (tlbench screen --study, before training): no kept/dropped claims
    from tlbench.report.sections import phase_blocks

    assert phase_blocks(*_tables(), ["screen/logme"]) == []
