"""The trials table: outcomes, collapse, parsing, and the arms a study's factors make."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from tlbench.report.collect import METRIC_COLUMNS, PARAM_COLUMNS, label_arms, outcome, trials_table
from tlbench.report.render import sorted_strategies
from tlbench.tracking.study_reader import RunRecord

# --- outcomes, collapse, columns ----------------------------------------------------------------------------


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
