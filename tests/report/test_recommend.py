"""The recommendation rule and its words, and ``recommended_arm`` (what ``tlbench export`` retrains),
the paired comparisons and the learning curves."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from scipy import stats

from tlbench.config.schema import DataConfig, DatasetName
from tlbench.data import load_splits
from tlbench.errors import ConfigError, TlbenchError
from tlbench.report import RecommendedArm, build_report, recommended_arm
from tlbench.report.recommend import (
    Curve,
    compare_strategies,
    comparison_table,
    fit_curve,
    frontier_text,
    outlook,
    outlook_sentence,
    recommend,
    recommendation_text,
    with_comparisons,
)
from tlbench.report.stats import BINOMIAL, PER_IMAGE
from tlbench.report.tables import summary_table
from tlbench.tracking.study import RunPredictions
from tlbench.training.network import prepare

from .fake_study import FakeTrial, build_study

Trials = Callable[..., pd.DataFrame]
LABELS = (0, 1, 0, 1)


def _run(strategy: str, seed: int, correct: list[int], **kw: Any) -> dict[str, Any]:
    return {"strategy": strategy, "seed": seed, "test_acc": float(np.mean(correct)), "n_test": len(correct),
            "hours": 0.001, "split_seed": 0, "data_fingerprint": f"10-{seed}", **kw}  # fmt: skip


def _predictions(table: pd.DataFrame, correct: list[list[int]]) -> dict[str, RunPredictions]:
    """Predicted = label where correct, the other class where not."""
    out = {}
    for run_id, row in zip(table["run_id"], correct, strict=True):
        predicted = tuple(y if c else 1 - y for y, c in zip(LABELS, row, strict=True))
        out[str(run_id)] = RunPredictions(LABELS, predicted)
    return out


# A: seed 1 right on images 0, 3; seed 2 on 0, 1, 3. B: always wrong.
# The contrast B - A is minus test_paired_stats.HAND.
A1, A2, WRONG = [1, 0, 0, 1], [1, 1, 0, 1], [0, 0, 0, 0]


def test_known_answer_per_image(trials: Trials) -> None:
    table = trials(_run("linear_probe", 1, A1), _run("linear_probe", 2, A2),
                   _run("scratch", 1, WRONG), _run("scratch", 2, WRONG))  # fmt: skip
    (c,) = compare_strategies(table, _predictions(table, [A1, A2, WRONG, WRONG]))
    assert (c.best, c.basis, c.seeds, c.images) == ("linear_probe", PER_IMAGE, (1, 2), 4)
    scratch = c.get("scratch")
    assert scratch is not None
    # worked by hand (test_paired_stats): mean -.625, variance 1/24 + 1/64, 3 degrees of freedom
    half = stats.t.ppf(0.975, 3) * np.sqrt(1 / 24 + 1 / 64)
    assert scratch.diff == pytest.approx(-0.625)
    assert (scratch.low, scratch.high) == pytest.approx((-0.625 - half, -0.625 + half))
    assert c.get("linear_probe").p_best > 0.9  # type: ignore[union-attr]


def test_pairs_only_on_shared_seeds_and_leaves_single_seeds_out(trials: Trials) -> None:
    rows = [_run("linear_probe", s, [1, 1, 0, 1]) for s in (1, 2, 3)]
    rows += [_run("full_finetune", s, [1, 1, 1, 1]) for s in (1, 2)]  # seed 3 failed
    rows += [_run("scratch", 1, [0, 1, 0, 0])]
    (c,) = compare_strategies(trials(*rows), {})
    # seed 3 of the probe has no partner: the comparison is on seeds 1 and 2; scratch has one seed
    assert c.seeds == (1, 2) and [s.strategy for s in c.strategies] == ["linear_probe", "full_finetune"]
    assert c.left_out == ("scratch (1 seed)",)


def test_mismatched_training_subsets_are_reported(trials: Trials) -> None:
    rows = [_run("linear_probe", s, A2) for s in (1, 2)]
    rows += [_run("scratch", 1, A1, data_fingerprint="other"), _run("scratch", 2, A1)]
    (c,) = compare_strategies(trials(*rows), {})
    # seed 1's runs did not see the same training images: said, not hidden
    assert any("seed 1" in n and "training subsets differ" in n for n in c.notes)


def test_falls_back_to_binomial_without_predictions(trials: Trials) -> None:
    table = trials(_run("linear_probe", 1, A1), _run("linear_probe", 2, A2),
                   _run("scratch", 1, WRONG), _run("scratch", 2, WRONG))  # fmt: skip
    predictions = _predictions(table, [A1, A2, WRONG, WRONG])
    del predictions[str(table["run_id"].iloc[0])]
    (c,) = compare_strategies(table, predictions)
    assert c.basis == BINOMIAL and any("1 of 4 final runs lack" in n for n in c.notes)


def test_predictions_that_disagree_with_test_acc_are_not_used(trials: Trials) -> None:
    table = trials(_run("linear_probe", 1, A1), _run("linear_probe", 2, A2),
                   _run("scratch", 1, WRONG), _run("scratch", 2, WRONG))  # fmt: skip
    # the probe's seed-1 predictions say 75% while test/acc says 50%: the artifact is not trusted
    (c,) = compare_strategies(table, _predictions(table, [A2, A2, WRONG, WRONG]))
    assert c.basis == BINOMIAL and any("predictions give 0.7500" in n for n in c.notes)


def test_tables_carry_the_comparison(trials: Trials) -> None:
    table = trials(_run("linear_probe", 1, A1), _run("linear_probe", 2, A2),
                   _run("scratch", 1, WRONG), _run("scratch", 2, WRONG),
                   {"role": "tune", "strategy": "scratch", "seed": 0, "test_acc": 0.5})  # fmt: skip
    comparisons = compare_strategies(table, {})
    rows = comparison_table(comparisons)
    assert list(rows["strategy"]) == ["linear_probe", "scratch"]
    annotated = with_comparisons(table, comparisons, finals_only=True)
    # the final runs carry their size's difference; the tuning trial carries nothing
    assert annotated["paired_diff"].iloc[2] == pytest.approx(-0.625)
    assert pd.isna(annotated["paired_diff"].iloc[4]) and len(annotated) == len(table)


def test_racing_keeps_the_survivors_seeds_and_pairs_a_retired_arm_alone(trials: Trials) -> None:
    # the race: scratch retired after seeds 1-2, the probe and full fine-tuning ran to seed 5
    rows = [_run("linear_probe", s, [1, 1, 0, s % 2]) for s in range(1, 6)]
    rows += [_run("full_finetune", s, [1, 1, 1, s % 2]) for s in range(1, 6)]
    rows += [_run("scratch", s, [0, 1, 0, 0]) for s in (1, 2)]
    (c,) = compare_strategies(trials(*rows), {})
    # the joint comparison is on all five seeds of the two survivors, not cut to the retired arm's two
    assert c.seeds == (1, 2, 3, 4, 5) and c.best == "full_finetune"
    probe, scratch = c.get("linear_probe"), c.get("scratch")
    assert probe is not None and scratch is not None and probe.p_best is not None
    # the retired arm: paired with the best on the seeds both have (1, 2), no P(best)
    assert scratch.seeds == (1, 2) and scratch.p_best is None and c.seeds_of(scratch) == (1, 2)
    # full_finetune on seeds 1, 2: (1 + 1 + 1 + 1/0) / 4 -> 0.875; scratch 0.25 on both
    assert scratch.diff == pytest.approx(0.25 - 0.875) and scratch.mean == pytest.approx(0.25)
    table = comparison_table([c]).set_index("strategy")
    assert table.loc["scratch", "paired_seeds"] == "1 2" and math.isnan(table.loc["scratch", "p_best"])


def test_a_missing_seed_no_longer_costs_every_arm_that_seed(trials: Trials) -> None:
    rows = [_run(s, seed, A2) for s in ("linear_probe", "full_finetune") for seed in (1, 2, 3)]
    rows += [_run("partial", seed, A1) for seed in (1, 2)]  # its seed 3 failed
    (c,) = compare_strategies(trials(*rows), {})
    # the probe and full fine-tuning are compared on three seeds; partial on its two, with the best
    assert c.seeds == (1, 2, 3) and c.get("partial").seeds == (1, 2)  # type: ignore[union-attr]


def test_a_leader_with_fewer_seeds_is_still_the_best(trials: Trials) -> None:
    # the default study at n=5: the race gave the probe and partial 8 seeds (undecided between them)
    # and stopped lp_ft at 3 (its pairs decided); lp_ft leads by far on its seeds: it is the best
    rows = [_run("linear_probe", s, [1, 0, 0, s % 2]) for s in range(1, 9)]
    rows += [_run("partial", s, [1, 0, 0, (s + 1) % 2]) for s in range(1, 9)]
    rows += [_run("lp_ft", s, [1, 1, 1, s % 2]) for s in (1, 2, 3)]
    (c,) = compare_strategies(trials(*rows), {})
    assert c.best == "lp_ft" and c.seeds == (1, 2, 3)  # jointly on the seeds every arm has
    assert all(s.diff <= 0 for s in c.strategies)  # nobody ahead of the best
    assert all(s.p_best is not None for s in c.strategies)


# --- the claim paired comparisons rest on: a seed fixes the training subset, split_seed the test set ---


def _cfg(**overrides: object) -> DataConfig:
    values: dict = {"name": DatasetName.synthetic, "resolution": 8, "num_classes": 3, "samples_per_class": 40}
    return DataConfig(**{**values, "n_per_class": 5, **overrides})


def test_the_subset_is_a_function_of_data_config_and_seed() -> None:
    # nothing but the data config and the seed reaches the subset: no strategy, model or optimiser
    assert list(inspect.signature(load_splits).parameters) == ["cfg", "seed"]
    # and the trial passes the run's own seed (the final seed) to it
    assert "load_splits(cfg.data, seed=cfg.seed)" in inspect.getsource(prepare)


def test_same_seed_same_subset_and_every_seed_the_same_test_set() -> None:
    one, again, other = load_splits(_cfg(), seed=1), load_splits(_cfg(), seed=1), load_splits(_cfg(), seed=2)
    # same seed: the same training images (the fingerprint hashes their indices) ...
    assert one.fingerprint == again.fingerprint and torch.equal(one.train.images, again.train.images)
    # ... another seed: other training images, the very same test images in the same order
    assert one.fingerprint != other.fingerprint
    assert torch.equal(one.test.images, other.test.images) and torch.equal(one.test.labels, other.test.labels)


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
    low, high = rec.frontier  # scratch is dominated: one step, probe -> full fine-tune
    assert (low.strategy, high.strategy) == ("linear_probe", "full_finetune")
    # +10 points for +0.01 device-hours: 10 accuracy per device-hour (1000 pp)
    assert (high.acc - low.acc) / (high.cost - low.cost) == pytest.approx(0.10 / 0.010)
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
    # 1.0 would be "100 points": almost certainly a percent typed as a fraction; checked before MLflow is read
    for entry in (build_report, recommended_arm):
        with pytest.raises(ValueError, match="tolerance"):
            entry("no-such-study", tolerance=tolerance, tracking_uri="sqlite:///nowhere/mlflow.db")


# --- the paired rule -----------------------------------------------------------------------------------

from tlbench.report.recommend import SizeComparison, StrategyComparison  # noqa: E402


def paired(
    *rows: tuple[str, float, float | None, float | None, float], basis: str = "per_image"
) -> SizeComparison:
    """(strategy, diff to the best, interval low, high, P(best)) at n=10; the best has no interval."""
    strategies = tuple(
        StrategyComparison(s, 0.8 + d, d, lo, hi, p, detectable=0.09, seeds_needed=14, images_needed=None)
        for s, d, lo, hi, p in rows
    )
    best = next(s.strategy for s in strategies if s.low is None)
    return SizeComparison("10", best, strategies, (1, 2, 3), 150, basis)


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


Trials = Callable[..., pd.DataFrame]
C = 0.37  # any exponent in the bounds: the fit is continuous, so it can be exact


def test_recovers_a_known_curve() -> None:
    truth = Curve(0.95, 0.6, C)
    sizes = [5, 10, 20, 50]
    fit = fit_curve(sizes, [truth.predict(n) for n in sizes])
    # exact data on the model's own grid: the same curve, so the same prediction at 4x
    assert fit.predict(200) == pytest.approx(truth.predict(200), abs=1e-9)


def test_two_sizes_fix_the_exponent_and_the_plateau_stays_below_100() -> None:
    assert fit_curve([10, 40], [0.7, 0.8]).exponent == 0.5
    steep = fit_curve([10, 50], [0.82, 0.96])  # a 0.5 exponent would need a plateau above 100%
    assert steep.plateau == 1.0 and steep.predict(50) == pytest.approx(0.96, abs=1e-3)


def test_flat_or_falling_data_gives_a_flat_line() -> None:
    fit = fit_curve([5, 20, 50], [0.9, 0.88, 0.86])
    assert fit.scale == 0.0 and fit.predict(1000) == pytest.approx(0.88)


def _curve_rows(
    strategy: str, curve: Curve, sizes: list[int], *, hours: float, noise: float = 0.0
) -> list[Any]:
    return [
        {"strategy": strategy, "n": str(n), "seed": s, "test_acc": curve.predict(n) + noise * (s - 2),
         "n_train": 10 * n, "n_classes": 10, "hours": hours * n}
        for n in sizes
        for s in (1, 2, 3)
    ]  # fmt: skip


def _verdict(trials: Trials, rows: list[Any]) -> tuple[Any, str]:
    table = trials(*rows)
    summary = summary_table(table)
    o = outlook(table, summary, recommend(summary, tolerance=0.01), tolerance=0.01)
    assert o is not None
    return o, outlook_sentence(o)


def test_twice_the_labels_changes_the_recommendation(trials: Trials) -> None:
    # the probe saturates at 85%; fine-tuning climbs to 95%: at n=20 they tie (within 1 pp) ...
    probe, tune = Curve(0.85, 0.2, 0.5), Curve(0.95, 0.647, 0.5)
    rows = _curve_rows("linear_probe", probe, [5, 10, 20], hours=1e-4, noise=0.002)
    rows += _curve_rows("full_finetune", tune, [5, 10, 20], hours=1e-3, noise=0.002)
    o, text = _verdict(trials, rows)
    # ... at twice the largest size, fine-tuning is ahead by ~3 pp, outside the tolerance
    assert o.targets == (40.0, 80.0) and o.current == "linear_probe"
    assert o.recommended == "full_finetune"
    assert "would the recommendation change? Yes, to **full_finetune**" in text and "extrapolated" in text


def test_twice_the_labels_keeps_the_recommendation(trials: Trials) -> None:
    rows = _curve_rows("linear_probe", Curve(0.95, 0.5, 0.5), [5, 10, 20], hours=1e-4, noise=0.002)
    rows += _curve_rows("full_finetune", Curve(0.90, 0.5, 0.5), [5, 10, 20], hours=1e-3, noise=0.002)
    o, text = _verdict(trials, rows)
    assert o.recommended == o.current == "linear_probe"
    assert "No: **linear_probe** stays" in text and "it is also the predicted best" in text
