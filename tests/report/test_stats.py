"""The statistics: t intervals, the Pareto frontier, and the paired variance model (known answers on
hand-built matrices, coverage by simulation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tlbench.report.stats import (
    binomial_covariance,
    binomial_model,
    crossed_model,
    detectable,
    images_needed,
    interval,
    joint_covariance,
    mean_ci,
    pareto_front,
    probability_best,
    seeds_needed,
)

# --- t intervals and the Pareto frontier --------------------------------------------------------------------

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


# --- the paired statistics ----------------------------------------------------------------------------------

# seeds x images contrast worked by hand: rows .5, .75; columns 1, .5, 0, 1; grand .625
HAND = np.array([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 1.0]])


def test_crossed_model_known_answer() -> None:
    model = crossed_model(HAND)
    # MS_row = .125 = MS_E -> no seed component; MS_col = 11/24 -> image (11/24 - 1/8) / 2 = 1/6
    assert (model.seed, model.image, model.interaction) == pytest.approx((0.0, 1 / 6, 0.125))
    # variance of the mean: image / m + interaction / (k m) = 1/24 + 1/64
    assert model.variance() == pytest.approx(1 / 24 + 1 / 64)
    # only the column mean square is left: its 3 degrees of freedom
    assert model.df() == pytest.approx(3.0)
    low, high = interval(HAND.mean(), model)
    half = stats.t.ppf(0.975, 3) * np.sqrt(1 / 24 + 1 / 64)
    assert (low, high) == pytest.approx((0.625 - half, 0.625 + half))


def test_binomial_model_known_answer() -> None:
    acc = np.array([[0.8, 0.7], [0.9, 0.7]])  # seeds x strategies
    model = binomial_model(acc, np.array([1.0, -1.0]), images=100)
    # seed part: var(.1, .2) / 2 = .0025; test part: (.85 .15 + .7 .3) / 100 = .003375
    assert model.variance() == pytest.approx(0.0025 + 0.003375)
    assert model.df() == pytest.approx(0.005875**2 / (0.0025**2 / 1 + 0.003375**2 / 99))


def test_identical_strategies_differ_by_exactly_nothing() -> None:
    # the same predictions on every seed and image: difference 0 with a zero-width interval
    model = crossed_model(np.zeros((3, 50)))
    assert interval(0.0, model) == (0.0, 0.0)


def test_joint_covariance_agrees_with_the_contrast_model() -> None:
    rng = np.random.default_rng(1)
    seed_effect = rng.normal(0, 0.3, (3, 4, 1))  # strong seed and image effects: nothing truncated
    image_effect = rng.normal(0, 0.3, (3, 1, 200))
    cube = (rng.normal(0, 0.2, (3, 4, 200)) + seed_effect + image_effect > 0).astype(float)
    covariance = joint_covariance(cube)
    w = np.array([1.0, -1.0, 0.0])
    model = crossed_model(np.tensordot(w, cube, axes=1))
    assert model.seed > 0 and model.image > 0
    # the bilinear form gives each contrast's variance (up to the PSD projection, here inactive)
    assert w @ covariance @ w == pytest.approx(model.variance(), rel=1e-9)


def test_binomial_covariance_is_seed_spread_plus_test_part() -> None:
    acc = np.array([[0.8, 0.7], [0.9, 0.7]])
    cov = binomial_covariance(acc, images=100)
    # diagonal: var over seeds / k + p (1 - p) / m; no image correlation is assumed between strategies
    assert cov[0, 0] == pytest.approx(0.005 / 2 + 0.85 * 0.15 / 100)
    assert cov[1, 1] == pytest.approx(0.7 * 0.3 / 100) and cov[0, 1] == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("means", "cov", "expected"),
    [
        ([0.0, 1.0], np.eye(2) * 1e-8, [0.0, 1.0]),  # far apart, tiny noise: certain
        ([0.5, 0.5], np.eye(2), [0.5, 0.5]),  # equal and symmetric: a coin flip
        ([0.0, 0.0, 0.0], np.eye(3), [1 / 3, 1 / 3, 1 / 3]),
    ],
)
def test_probability_best(means: list[float], cov: np.ndarray, expected: list[float]) -> None:
    p = probability_best(np.array(means), cov, df=10)
    assert p == pytest.approx(expected, abs=0.02) and p.sum() == pytest.approx(1.0)


def test_seeds_and_images_needed_are_the_smallest_that_detect() -> None:
    # seed spread dominates: more seeds resolve 12 pp, more test images cannot
    seedy = binomial_model(
        np.array([[0.8, 0.7], [0.9, 0.72], [0.7, 0.74]]), np.array([1.0, -1.0]), images=400
    )
    assert detectable(seedy) > 0.12
    k = seeds_needed(seedy, 0.12)
    assert k is not None and k > 3 and detectable(seedy, seeds=k) <= 0.12 < detectable(seedy, seeds=k - 1)
    assert images_needed(seedy, 0.12) is None
    # test-set sampling dominates: more images resolve 10 pp, more seeds cannot
    noisy = binomial_model(
        np.array([[0.8, 0.75], [0.84, 0.76], [0.82, 0.79]]), np.array([1.0, -1.0]), images=150
    )
    m = images_needed(noisy, 0.10)
    assert m is not None and m > 150 and detectable(noisy, images=m) <= 0.10 < detectable(noisy, images=m - 1)
    assert seeds_needed(noisy, 0.10) is None
    # a difference of zero is never "resolved"
    assert seeds_needed(noisy, 0.0) is None and images_needed(noisy, 0.0) is None


_KINDS = np.array([[0.97, 0.97], [0.9, 0.2], [0.2, 0.9], [0.1, 0.1]])  # P(correct) of A, B per image kind


def _simulate(rng: np.random.Generator, *, seeds: int, seed_sd: float) -> tuple[np.ndarray, float]:
    """Correctness of A minus B on 150 test images drawn fresh; the true difference is known."""
    mix = np.array([0.8, 0.1, 0.05, 0.05])
    kind = rng.choice(4, size=150, p=mix)
    shift = rng.uniform(-seed_sd, seed_sd, (2, seeds, 1))
    p = np.clip(_KINDS[kind].T[:, None, :] + shift, 0, 1)  # strategy x seed x image
    correct = (rng.random(p.shape) < p).astype(float)
    return correct[0] - correct[1], float(mix @ (_KINDS[:, 0] - _KINDS[:, 1]))


def test_interval_covers_the_true_difference_95_percent_of_studies() -> None:
    rng = np.random.default_rng(0)
    hits = naive = binomial = 0
    studies = 400
    for _ in range(studies):
        d, truth = _simulate(rng, seeds=3, seed_sd=0.03)
        low, high = interval(d.mean(), crossed_model(d))
        hits += low <= truth <= high
        rows = d.mean(axis=1)  # seeds only: what a per-strategy CI over seeds amounts to
        half = stats.t.ppf(0.975, 2) * rows.std(ddof=1) / np.sqrt(3)
        naive += rows.mean() - half <= truth <= rows.mean() + half
        acc = np.stack([(d > 0).mean(axis=1), (d < 0).mean(axis=1)], axis=1)  # a stand-in pair of accuracies
        low, high = interval(d.mean(), binomial_model(acc, np.array([1.0, -1.0]), images=150))
        binomial += low <= truth <= high
    # about 95% (binomial SE of the estimate ~1.1 pp at 400 studies)
    assert 0.92 <= hits / studies <= 0.98, hits / studies
    # leaving the test set out covers clearly less: the test images are shared by every seed
    assert naive / studies < 0.91, naive / studies
    # the binomial fallback ignores the pairing on images: conservative
    assert binomial / studies >= 0.95, binomial / studies
