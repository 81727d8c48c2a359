from __future__ import annotations

import math

import pandas as pd
import pytest

from tlbench.report.recommend import frontier_text, recommend, recommendation_text


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
