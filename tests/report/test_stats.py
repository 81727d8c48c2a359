from __future__ import annotations

import math

import pytest

from tlbench.report.stats import mean_ci, pareto_front

T_975_DF2 = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2)


@pytest.mark.parametrize(
    ("values", "mean", "half_width"),
    [
        ([0.7], 0.7, None),  # a single seed: a mean, no interval
        ([0.5, 0.5, 0.5], 0.5, 0.0),  # identical seeds: zero width, not NaN
        ([1.0, 2.0, 3.0], 2.0, T_975_DF2 * 1.0 / math.sqrt(3)),  # Student-t with n-1 = 2 dof, sd 1
        ([0.8, math.nan, 0.8], 0.8, 0.0),  # NaN values are ignored, not propagated
    ],
)
def test_mean_ci(values: list[float], mean: float, half_width: float | None) -> None:
    estimate = mean_ci(values)
    assert estimate.mean == pytest.approx(mean)
    if half_width is None:
        assert estimate.half_width is None and estimate.low is None
    else:
        assert estimate.half_width == pytest.approx(half_width)


def test_mean_ci_two_seeds_is_wide() -> None:
    # with 2 seeds t(0.975, 1) = 12.71: the interval is honest about how little two seeds say
    assert mean_ci([0.81, 0.83]).half_width == pytest.approx(12.7062047 * 0.01414213562 / math.sqrt(2))


@pytest.mark.parametrize(("values", "confidence"), [([], 0.95), ([1.0], 1.0), ([1.0], 0.0)])
def test_mean_ci_rejects_bad_input(values: list[float], confidence: float) -> None:
    # no values, or a confidence outside (0, 1), is a caller error
    with pytest.raises(ValueError):
        mean_ci(values, confidence=confidence)


@pytest.mark.parametrize(
    ("costs", "accs", "front"),
    [
        ([1, 2, 3], [0.5, 0.6, 0.7], [0, 1, 2]),  # each step buys accuracy: all on the front
        ([1, 2, 3], [0.7, 0.6, 0.5], [0]),  # the cheapest is also the best: it dominates all
        ([3, 1, 2], [0.9, 0.5, 0.4], [1, 0]),  # ordered by cost; (2, 0.4) is beaten by (1, 0.5)
        ([1, 1], [0.5, 0.6], [1]),  # same cost: only the more accurate one
        ([1, 1], [0.6, 0.6], [0, 1]),  # identical points are both kept
        ([0, 1], [0.3, 0.3], [0]),  # same accuracy for more cost is dominated
        ([1, math.nan, 2], [0.5, 0.9, math.nan], [0]),  # NaN points never qualify
        ([0.001, 0.002], [0.82, 0.8200000000000001], [0]),  # float noise does not buy a place
        ([], [], []),  # nothing in, nothing out
    ],
)
def test_pareto_front(costs: list[float], accs: list[float], front: list[int]) -> None:
    assert pareto_front(costs, accs) == front
