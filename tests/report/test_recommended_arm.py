"""``recommended_arm``: the arm the report recommends, with what its final runs ran (``tlbench export``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from tlbench.errors import ConfigError, TlbenchError
from tlbench.report import RecommendedArm, build_report, recommended_arm

from .fake_study import FakeTrial, build_study


def _finals(store: dict[str, Any], strategy: str, size: str) -> dict[str, float]:
    """run id -> test/acc of the completed final runs of one cell, straight from MLflow."""
    client = MlflowClient(store["uri"])
    out = {}
    for run_id in store["run_ids"].values():
        run = client.get_run(run_id).data
        if (run.tags["role"], run.tags["status"], run.params["strategy"], run.params["n_per_class"]) == (
            "final",
            "completed",
            strategy,
            size,
        ):
            out[run_id] = run.metrics["test/acc"]
    return out


def test_default_is_the_recommendation_at_the_largest_size(study_store: dict[str, Any]) -> None:
    arm = recommended_arm("smoke", tracking_uri=study_store["uri"])
    # "all" is the largest size; the report recommends full_finetune there (tag report.recommended/nall)
    assert (arm.n_per_class, arm.strategy, arm.strategy_name, arm.recommended) == (
        "all",
        "full_finetune",
        "full_finetune",
        True,
    )
    accs = _finals(study_store, "full_finetune", "all")
    # the finals are exactly the cell's completed final runs, and the interval is the t interval over them
    assert set(arm.final_run_ids) == set(accs) and arm.seeds == 3
    assert arm.acc_mean == pytest.approx(math.fsum(accs.values()) / 3, abs=1e-12)
    half = stats.t.ppf(0.975, 2) * stats.tstd(list(accs.values())) / math.sqrt(3)
    assert arm.acc_half_width == pytest.approx(half, rel=1e-9)
    assert arm.acc_low == pytest.approx(arm.acc_mean - half) and arm.acc_high == pytest.approx(
        min(1.0, arm.acc_mean + half)
    )
    # the configuration every final ran alike; per-seed values are left out
    assert arm.params["strategy"] == "full_finetune" and arm.params["lr"] == "0.001"
    assert "seed" not in arm.params and "data_fingerprint" not in arm.params
    assert arm.cell == "data.n_per_class=all,strategy=full_finetune" and arm.optuna_study == "smoke"
    # the sentence carries the numbers
    assert arm.verdict.startswith("At all data, full_finetune reached 96.0% test accuracy (95% CI ")
    assert "over 3 final seeds" in arm.verdict and "the report recommends it" in arm.verdict


@pytest.mark.parametrize(
    ("size", "strategy", "expected", "recommended", "phrase"),
    [
        # n=10: the probe is recommended, cheaper and not credibly worse than full_finetune
        ("10", None, "linear_probe", True, "cheapest arm not credibly worse than the most accurate, full_"),
        # an int size reads like its label
        (10, None, "linear_probe", True, "not credibly worse"),
        # the most accurate arm, asked for by name, is not the recommendation: said so
        ("10", "full_finetune", "full_finetune", False, "the report recommends the cheaper linear_probe"),
        # an arm neither recommended nor best: the recommendation and the best are named
        ("all", "scratch", "scratch", False, "the report recommends full_finetune"),
    ],
)
def test_size_and_strategy_choose_the_arm(
    study_store: dict[str, Any],
    size: Any,
    strategy: str | None,
    expected: str,
    recommended: bool,
    phrase: str,
) -> None:
    arm = recommended_arm("smoke", size=size, strategy=strategy, tracking_uri=study_store["uri"])
    assert (arm.strategy, arm.recommended) == (expected, recommended)
    assert phrase in arm.verdict, arm.verdict


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        # a size the study does not have: the valid ones listed
        (
            {"size": "7"},
            ConfigError,
            r"no completed final runs at data size '7'.*sizes with final runs: 10, all",
        ),
        # a strategy without finals at the size: the arms there listed
        ({"size": "all", "strategy": "partial"}, ConfigError, r"no arm 'partial'.*linear_probe, full_fine"),
        ({"strategy": "lp_ft"}, ConfigError, r"no arm 'lp_ft' with completed final runs at all data"),
    ],
)
def test_bad_size_or_strategy_is_one_line(
    study_store: dict[str, Any], kw: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match) as caught:
        recommended_arm("smoke", tracking_uri=study_store["uri"], **kw)
    assert "\n" not in str(caught.value)  # one line


def test_a_study_without_completed_finals_has_no_arm(mlflow_uri: str) -> None:
    trials = [
        FakeTrial("tune", "linear_probe", "10", test_acc=None),
        FakeTrial(
            "final", "linear_probe", "10", trial_number=1, status="failed: out of memory", test_acc=None
        ),
    ]
    build_study(mlflow_uri, "s", trials)
    # a TlbenchError (one line for the CLI), saying why
    with pytest.raises(TlbenchError, match="study 's' has no completed final runs"):
        recommended_arm("s", tracking_uri=mlflow_uri)


CONFIG = "strategy:\n  name: linear_probe\nseed: 1\n"
OVERRIDES = ("strategy=linear_probe", "data.n_per_class=10", "optimizer.lr=0.01")


def _raced_study(uri: str) -> None:
    """linear_probe tuned (trials 0, 1; 1 is best) and raced to 3 seeds; scratch retired after 2 seeds;
    a collapsed final of linear_probe (seed 3) that must never count."""
    cell = "data.n_per_class=10,strategy=linear_probe"
    tune = [
        FakeTrial("tune", "linear_probe", "10", trial_number=n, val_acc=v, extra_tags=(("cell", cell),))
        for n, v in ((0, 0.6), (1, 0.8))
    ]
    finals = [
        FakeTrial("final", "linear_probe", "10", trial_number=10 + seed, seed=seed, test_acc=acc,
                  tuned_from=1, steps=40 + seed, overrides=(*OVERRIDES, f"seed={seed}"), config=CONFIG,
                  extra_tags=(("cell", cell),))
        for seed, acc in ((0, 0.80), (1, 0.82), (2, 0.84))
    ]  # fmt: skip
    finals.append(
        FakeTrial("final", "linear_probe", "10", trial_number=13, seed=3, test_acc=0.1, val_acc=0.1,
                  status="failed: collapsed: validation accuracy 10.0% is chance (10 classes)", tuned_from=1,
                  extra_tags=(("cell", cell), ("collapsed", "true")))
    )  # fmt: skip
    finals += [
        FakeTrial(
            "final", "scratch", "10", trial_number=20 + seed, seed=seed, test_acc=acc, device_hours=0.01
        )
        for seed, acc in ((0, 0.4), (1, 0.42))
    ]
    build_study(uri, "raced", tune + finals)


def test_the_arm_links_its_tuning_trial_steps_overrides_and_config(mlflow_uri: str) -> None:
    _raced_study(mlflow_uri)
    arm = recommended_arm("raced", tracking_uri=mlflow_uri)
    client = MlflowClient(mlflow_uri)
    assert isinstance(arm, RecommendedArm) and arm.strategy == "linear_probe"
    # the collapsed seed is a failure: not among the finals, not in the mean
    assert [f.seed for f in arm.finals] == [0, 1, 2] and arm.acc_mean == pytest.approx(0.82)
    # the tuning trial the configuration came from (trial 1 of the cell), by its MLflow run
    assert arm.tuned_from_trial == 1 and arm.tune_run_id is not None
    tune = client.get_run(arm.tune_run_id).data
    assert (tune.tags["role"], tune.tags["trial_number"], tune.metrics["val/acc"]) == ("tune", "1", 0.8)
    # each final's Optuna trial number and steps; the overrides without the seed; the config text
    assert [(f.optuna_trial, f.steps) for f in arm.finals] == [(10, 40), (11, 41), (12, 42)]
    assert arm.overrides == OVERRIDES and arm.config_yaml == CONFIG
    assert arm.config_run_id == arm.finals[0].run_id


def test_the_arm_is_the_one_the_report_recommends(mlflow_uri: str, tmp_path: Path) -> None:
    _raced_study(mlflow_uri)
    result = build_report("raced", out=tmp_path, tracking_uri=mlflow_uri)
    arm = recommended_arm("raced", tracking_uri=mlflow_uri)
    tags = MlflowClient(mlflow_uri).get_run(str(result.published_to)).data.tags
    # one analysis for both: the exported arm is the report's recommendation at that size
    assert tags["report.recommended/n10"] == arm.strategy
    # an arm with fewer seeds (raced out) is still an arm: asked for by name, its own two seeds
    scratch = recommended_arm("raced", strategy="scratch", tracking_uri=mlflow_uri)
    assert scratch.seeds == 2 and scratch.acc_mean == pytest.approx(0.41) and not scratch.recommended
    assert scratch.overrides is None and scratch.config_yaml is None  # not logged by these runs
