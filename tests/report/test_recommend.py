"""The recommendation rule and its words, and ``recommended_arm`` (what ``tlbench export`` retrains)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from tlbench.errors import ConfigError, TlbenchError
from tlbench.report import RecommendedArm, build_report, recommended_arm
from tlbench.report.recommend import frontier_text, recommend, recommendation_text

from .fake_study import FakeTrial, build_study

# --- the recommendation rule --------------------------------------------------------------------------------


def summary(*rows: tuple[str, float, float, float | None]) -> pd.DataFrame:
    """(strategy, mean accuracy, device-hours, CI half-width or None) at n=10, FLOPs ∝ hours."""
    return pd.DataFrame(
        [
            {"n_per_class": "10", "strategy": s, "seeds": 3 if ci is not None else 1, "acc_mean": acc,
             "acc_ci": math.nan if ci is None else ci, "device_hours": hours, "train_flops": hours * 1e12}
            for s, acc, hours, ci in rows
        ]
    )  # fmt: skip


LP, FF = "linear_probe", "full_finetune"


@pytest.mark.parametrize(
    ("rows", "tolerance", "recommended", "best"),
    [
        # the probe is within 1 pp of fine-tuning and 4x cheaper: the probe
        ([(LP, 0.82, 0.001, 0.01), (FF, 0.825, 0.004, 0.01)], 0.01, LP, FF),
        # 2 pp behind is outside a 1 pp tolerance: the best
        ([(LP, 0.80, 0.001, 0.01), (FF, 0.82, 0.004, 0.01)], 0.01, FF, FF),
        # ... but inside a 3 pp tolerance: the probe
        ([(LP, 0.80, 0.001, 0.01), (FF, 0.82, 0.004, 0.01)], 0.03, LP, FF),
        # exactly at the tolerance counts as within
        ([(LP, 0.81, 0.001, 0.01), (FF, 0.82, 0.004, 0.01)], 0.01, LP, FF),
        # zero tolerance: only the best itself
        ([(LP, 0.8199, 0.001, 0.01), (FF, 0.82, 0.004, 0.01)], 0.0, FF, FF),
        # the cheapest within tolerance, not merely a cheaper one: as_is costs nothing
        ([("as_is", 0.815, 0.0, None), (LP, 0.818, 0.001, 0.01), (FF, 0.82, 0.004, 0.01)], 0.01, "as_is", FF),
        # equal accuracy: the cheaper one is also "the best"
        ([("scratch", 0.7, 0.002, 0.01), ("partial", 0.7, 0.001, 0.01)], 0.0, "partial", "partial"),
    ],
)
def test_recommendation(rows: list, tolerance: float, recommended: str, best: str) -> None:
    (rec,) = recommend(summary(*rows), tolerance=tolerance)
    assert (rec.recommended.strategy, rec.best.strategy) == (recommended, best)


def test_frontier_steps_give_accuracy_per_extra_device_hour() -> None:
    (rec,) = recommend(
        summary(
            ("linear_probe", 0.80, 0.001, 0.01),
            ("scratch", 0.5, 0.002, 0.01),
            ("full_finetune", 0.90, 0.011, 0.01),
        ),
        tolerance=0.01,
    )
    (step,) = rec.frontier  # scratch is dominated: one step, probe -> full fine-tune
    assert (step.from_strategy, step.to_strategy) == ("linear_probe", "full_finetune")
    # +10 points for +0.01 device-hours: 10 accuracy per device-hour (1000 pp)
    assert step.acc_per_cost == pytest.approx(0.10 / 0.010)
    assert "+10.0 pp for +0.0100 device-hours, i.e. 1,000 pp per extra device-hour" in frontier_text(
        rec, unit="device-hours"
    )


def test_text_states_the_numbers_and_the_noise() -> None:
    (rec,) = recommend(
        summary(("linear_probe", 0.82, 0.001, 0.01), ("full_finetune", 0.825, 0.004, 0.01)), tolerance=0.01
    )
    text = recommendation_text(rec, tolerance=0.01, unit="GPU-hours")
    # the recommendation, its accuracy and cost, the best and the gap, in the caller's unit
    for part in (
        "use **linear_probe**",
        "82.0%",
        "0.00100 GPU-hours",
        "**full_finetune** at 82.5%",
        "0.5 pp",
        "4.0×",
    ):
        assert part in text
    # 0.5 pp apart with ±1 pp intervals: the text says the difference is noise
    assert "within the 95% confidence intervals" in text


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([("linear_probe", 0.8, 0.001, 0.01)], "Nothing to compare"),  # one strategy: said, not ranked
        (
            [("linear_probe", 0.8, 0.001, None), ("scratch", 0.5, 0.002, None)],
            "Single-seed results",
        ),  # caveat
        (
            [("as_is", 0.7, 0.0, 0.01), ("full_finetune", 0.9, 0.004, 0.01)],
            "+20.0 pp for +0.00400",
        ),  # from zero cost
    ],
)
def test_text_edge_cases(rows: list, expected: str) -> None:
    (rec,) = recommend(summary(*rows), tolerance=0.01)
    assert expected in recommendation_text(rec, tolerance=0.01, unit="device-hours")


def test_one_recommendation_per_size_and_none_without_data() -> None:
    both = pd.concat(
        [
            summary(("linear_probe", 0.8, 0.001, 0.01)),
            summary(("scratch", 0.9, 0.01, 0.01)).assign(n_per_class="all"),
        ]
    )
    # sizes in order, each judged on its own rows
    assert [(r.n_per_class, r.recommended.strategy) for r in recommend(both, tolerance=0.01)] == [
        ("10", "linear_probe"),
        ("all", "scratch"),
    ]
    assert recommend(summary().reindex(columns=both.columns), tolerance=0.01) == []  # no rows: nothing


@pytest.mark.parametrize("tolerance", [-0.01, 1.0, 5.0])
def test_tolerance_must_be_an_accuracy(tolerance: float) -> None:
    # 1.0 would be "100 points": almost certainly a percent typed as a fraction
    with pytest.raises(ValueError, match="tolerance"):
        recommend(summary(("linear_probe", 0.8, 0.001, 0.01)), tolerance=tolerance)


# --- the paired rule -----------------------------------------------------------------------------------

from tlbench.report.paired import SizeComparison, StrategyComparison  # noqa: E402


def paired(
    *rows: tuple[str, float, float | None, float | None, float], basis: str = "per_image"
) -> SizeComparison:
    """(strategy, diff to the best, interval low, high, P(best)) at n=10; the best has no interval."""
    strategies = tuple(
        StrategyComparison(s, 0.8 + d, d, lo, hi, p, detectable=0.09, seeds_needed=14, images_needed=None)
        for s, d, lo, hi, p in rows
    )
    best = next(s.strategy for s in strategies if s.low is None)
    return SizeComparison("10", best, strategies, (1, 2, 3), 150, basis, 0.95)


def test_indistinguishable_wording() -> None:
    table = summary((LP, 0.792, 0.001, 0.019), ("partial", 0.826, 0.007, 0.091))
    comparison = paired((LP, -0.034, -0.126, 0.060, 0.3), ("partial", 0.0, None, None, 0.7))
    (rec,) = recommend(table, tolerance=0.01, comparisons=[comparison])
    assert (rec.recommended.strategy, rec.best.strategy) == (LP, "partial")
    text = recommendation_text(rec, tolerance=0.01, unit="device-hours")
    for part in (
        "use **linear_probe**",
        # the sentence, with this table's numbers
        "**linear_probe** and **partial** are indistinguishable on this data (difference +3.4 pp for "
        "partial, 95% interval −6.0 to +12.6 pp); linear_probe costs 1/7.0 as much.",
        "None of the 2 strategies compared can be told apart on this data",
        # what would resolve it: the detectable difference at this test size, and seeds (images cannot)
        "At this test size (150 test images, 3 seeds) a difference must be about 9.0 pp to be detected",
        "would take about 14 seeds (more test images alone would not: seed variation limits it)",
        "P(best): partial 70%, linear_probe 30%.",
    ):
        assert part in text, part


def test_paired_rule_lets_a_noisy_far_mean_in_and_keeps_a_credibly_worse_one_out() -> None:
    table = summary(("as_is", 0.70, 0.0, 0.1), (LP, 0.795, 0.001, 0.01), (FF, 0.80, 0.004, 0.01))
    # as_is: 10 pp behind but its interval reaches +2 pp: not credibly worse, and free -> recommended
    loose = paired(
        ("as_is", -0.10, -0.22, 0.02, 0.05), (LP, -0.005, -0.02, 0.01, 0.4), (FF, 0.0, None, None, 0.55)
    )
    (rec,) = recommend(table, tolerance=0.01, comparisons=[loose])
    assert rec.recommended.strategy == "as_is"
    # the old mean rule would have said the probe (0.5 pp behind); as_is is out once its interval tightens
    tight = paired(
        ("as_is", -0.10, -0.12, -0.08, 0.0), (LP, -0.005, -0.02, 0.01, 0.4), (FF, 0.0, None, None, 0.6)
    )
    (rec,) = recommend(table, tolerance=0.01, comparisons=[tight])
    assert rec.recommended.strategy == LP
    text = recommendation_text(rec, tolerance=0.01, unit="device-hours")
    assert "Credibly worse than full_finetune: as_is (difference +10.0 pp for full_finetune" in text


def test_better_by_less_than_the_tolerance_is_said_so() -> None:
    table = summary((LP, 0.795, 0.001, 0.002), (FF, 0.80, 0.004, 0.002))
    comparison = paired((LP, -0.005, -0.008, -0.002, 0.0), (FF, 0.0, None, None, 1.0))
    (rec,) = recommend(table, tolerance=0.01, comparisons=[comparison])
    text = recommendation_text(rec, tolerance=0.01, unit="device-hours")
    # credibly worse, but by less than 1 pp: still the recommendation, and not called "indistinguishable"
    assert rec.recommended.strategy == LP and "differ by less than 1.0 pp" in text
    assert "indistinguishable" not in text


# --- recommended_arm: the recommended arm with what its final runs ran (tlbench export) ---------------


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


@pytest.mark.parametrize(
    ("ci", "seeds", "phrase"),
    [
        (None, 1, "a single final seed, no interval"),
        (0.0, 2, "all 2 final seeds equal, no interval"),  # never "95% CI 94.5% to 94.5%"
        (0.01, 3, "95% CI 93.5% to 95.5% over 3 final seeds"),
    ],
)
def test_verdict_sentence_gives_an_interval_only_where_the_seeds_spread(
    ci: float | None, seeds: int, phrase: str
) -> None:
    from tlbench.report.recommend import Choice, Recommendation, verdict_sentence

    choice = Choice(strategy="lp_ft", acc=0.945, acc_ci=ci, seeds=seeds, cost=0.005)
    rec = Recommendation(
        n_per_class="20", recommended=choice, best=choice, cheapest=choice, compared=("lp_ft",), frontier=()
    )
    sentence = verdict_sentence(rec, choice, unit="device-hours")
    assert phrase in sentence and "94.5% test accuracy" in sentence


def test_a_cheaper_arm_wholly_behind_and_beyond_the_tolerance_on_average_is_credibly_worse() -> None:
    # the default study at n=50: partial -3.4 pp, interval -5.9 to -0.9 pp: its interval reaches above
    # -1 pp, but it excludes 0 and the mean is 3.4 pp behind: credibly worse, lp_ft is recommended
    table = summary(("partial", 0.931, 0.0038, 0.058), ("lp_ft", 0.965, 0.0048, 0.012))
    comparison = paired(("partial", -0.034, -0.059, -0.009, 0.0), ("lp_ft", 0.0, None, None, 1.0))
    (rec,) = recommend(table, tolerance=0.01, comparisons=[comparison])
    assert rec.recommended.strategy == "lp_ft"
    text = recommendation_text(rec, tolerance=0.01, unit="device-hours")
    assert "Credibly worse than lp_ft: partial" in text


def test_within_the_tolerance_on_average_but_not_wholly_is_said_so() -> None:
    table = summary((LP, 0.795, 0.001, 0.01), (FF, 0.80, 0.004, 0.01))
    comparison = paired((LP, -0.005, -0.015, -0.001, 0.1), (FF, 0.0, None, None, 0.9))
    (rec,) = recommend(table, tolerance=0.01, comparisons=[comparison])
    text = recommendation_text(rec, tolerance=0.01, unit="device-hours")
    assert rec.recommended.strategy == LP
    assert "differ by 0.5 pp on average, within the 1.0 pp tolerance" in text
    assert "less than 1.0 pp" not in text  # its interval reaches -1.5 pp: not "less than 1 pp" for sure
