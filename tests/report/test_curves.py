"""Learning curves: known curves are recovered, and the "twice the labels" verdict."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

from tlbench.report.curves import Curve, fit_curve, outlook, outlook_sentence
from tlbench.report.recommend import recommend
from tlbench.report.tables import summary_table

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
