"""The report's statistics (pure): Student-t means over seeds, the Pareto frontier, and how sure a paired
difference in test accuracy is (variance components over seeds x test images, power, P(best)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

# --- means, intervals, the Pareto frontier ------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds; ``half_width`` is None with a single seed (no interval can be claimed)."""

    mean: float
    half_width: float | None
    n: int
    std: float | None  # sample standard deviation (ddof=1); None with a single value

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width


def mean_ci(values: Sequence[float], *, confidence: float = 0.95) -> Estimate:
    """Mean and the half-width of its two-sided Student-t interval with n-1 degrees of freedom.

    Seeds are few (3-5), so the t quantile, not 1.96, is what makes the interval honest.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence=}")
    clean = np.asarray([float(v) for v in values if not math.isnan(float(v))])
    if not clean.size:
        raise ValueError("mean_ci needs at least one value")
    n, mean = clean.size, float(np.mean(clean))
    if n == 1:
        return Estimate(mean=mean, half_width=None, n=1, std=None)
    std = float(np.std(clean, ddof=1))
    if std == 0:  # identical seeds: scipy's interval is undefined at scale 0, the width is 0
        return Estimate(mean=mean, half_width=0.0, n=n, std=0.0)
    low, high = stats.t.interval(confidence, df=n - 1, loc=mean, scale=std / math.sqrt(n))
    return Estimate(mean=mean, half_width=(float(high) - float(low)) / 2, n=n, std=std)


def pareto_front(costs: Sequence[float], accuracies: Sequence[float], *, atol: float = 1e-9) -> list[int]:
    """Indices of the points no other point beats (cost no higher, accuracy no lower, one strictly),
    ordered by cost. NaN points never qualify; identical points are all kept.

    Accuracies closer than ``atol`` count as equal, so a mean that differs from another only by float
    rounding (0.82 vs 0.8200000000000001) does not buy a place on the front.
    """
    if len(costs) != len(accuracies):
        raise ValueError(f"lengths differ: {len(costs)=} {len(accuracies)=}")
    points = [
        (float(c), float(a), i)
        for i, (c, a) in enumerate(zip(costs, accuracies, strict=True))
        if not (math.isnan(float(c)) or math.isnan(float(a)))
    ]
    # Cheapest first, and among equal costs the most accurate first: a point is on the front exactly
    # when it is at least as accurate as everything cheaper-or-equal before it.
    points.sort(key=lambda p: (p[0], -p[1]))
    front: list[int] = []
    best_acc = -math.inf
    best_cost = math.nan
    for cost, acc, index in points:
        if acc > best_acc + atol:
            front.append(index)
            best_acc, best_cost = acc, cost
        elif abs(acc - best_acc) <= atol and cost == best_cost:
            front.append(index)  # a duplicate of a front point is not dominated by it
    return front


# --- how sure a paired difference is ------------------------------------------------------------------------
# Final runs of a size are crossed: every strategy on the same seeds and test images. ``D[i, j]``, the
# contrast of correctness for seed i on image j, has a mean whose variance the two-way random-effects
# ANOVA splits into ``seed / k + image / m + interaction / (k m)``; the t interval uses Satterthwaite's
# degrees of freedom. Not a bootstrap over seeds: with 3 seeds there are 10 distinct resamples and its
# "95%" intervals cover far less often (see the tests). Without per-image predictions (older studies)
# the test-set part is binomial, p (1 - p) / m per strategy, independent: wider than the paired truth.

PER_IMAGE, BINOMIAL = "per_image", "binomial"


@dataclass(frozen=True)
class VarianceModel:
    """Variance components of one contrast; ``variance(k, m)`` is the variance of its mean."""

    seed: float  # between-seed variance of the contrast on an infinite test set
    image: float  # between-image variance of the contrast averaged over infinitely many seeds
    interaction: float  # seed x image (and Bernoulli) noise
    seeds: int
    images: int
    kind: str  # PER_IMAGE | BINOMIAL

    def variance(self, *, seeds: int | None = None, images: int | None = None) -> float:
        k, m = seeds or self.seeds, images or self.images
        return self.seed / k + self.image / m + self.interaction / (k * m)

    def df(self, *, seeds: int | None = None, images: int | None = None) -> float:
        """Satterthwaite degrees of freedom of ``variance`` (``inf`` when it is zero)."""
        k, m = seeds or self.seeds, images or self.images
        if self.kind == BINOMIAL:
            terms = [(self.seed / k, k - 1), (self.image / m, m - 1)]
        else:  # expected mean squares of rows and columns (when their component is not truncated), residual
            e, terms = self.interaction, []
            if self.seed > 0:
                terms.append((e + m * self.seed, k - 1))
            if self.image > 0:
                terms.append((e + k * self.image, m - 1))
            if len(terms) != 1:
                terms.append(((1 - len(terms)) * e, (k - 1) * (m - 1)))
            terms = [(value / (k * m), df) for value, df in terms]
        total = sum(value for value, _ in terms)
        spread = sum(value**2 / df for value, df in terms if df > 0)
        return math.inf if total <= 0 or spread <= 0 else total**2 / spread

    def se(self) -> float:
        return math.sqrt(max(self.variance(), 0.0))


def crossed_model(contrast: np.ndarray) -> VarianceModel:
    """Variance components of a seeds x images contrast matrix (two-way ANOVA, no replication)."""
    d = np.asarray(contrast, dtype=float)
    if d.ndim != 2 or d.shape[0] < 2 or d.shape[1] < 2:
        raise ValueError(f"need a seeds x images matrix with >= 2 of each, got shape {d.shape}")
    k, m = d.shape
    grand = d.mean()
    rows, cols = d.mean(axis=1), d.mean(axis=0)
    ms_row = m * float(np.sum((rows - grand) ** 2)) / (k - 1)
    ms_col = k * float(np.sum((cols - grand) ** 2)) / (m - 1)
    residual = d - rows[:, None] - cols[None, :] + grand
    ms_e = float(np.sum(residual**2)) / ((k - 1) * (m - 1))
    return VarianceModel(
        seed=max(ms_row - ms_e, 0.0) / m,
        image=max(ms_col - ms_e, 0.0) / k,
        interaction=ms_e,
        seeds=k,
        images=m,
        kind=PER_IMAGE,
    )


def binomial_model(accuracies: np.ndarray, weights: np.ndarray, *, images: int) -> VarianceModel:
    """Contrast ``weights`` of per-seed accuracies (seeds x strategies), test set approximated as binomial."""
    acc = np.asarray(accuracies, dtype=float)
    w = np.asarray(weights, dtype=float)
    if acc.ndim != 2 or acc.shape[0] < 2 or acc.shape[1] != w.size:
        raise ValueError(f"need seeds x strategies with >= 2 seeds and one weight each; got {acc.shape}, {w}")
    if images < 2:
        raise ValueError(f"need >= 2 test images, got {images=}")
    means = acc.mean(axis=0)
    return VarianceModel(
        seed=float(np.var(acc @ w, ddof=1)),
        image=float(np.sum(w**2 * means * (1 - means))),
        interaction=0.0,
        seeds=acc.shape[0],
        images=images,
        kind=BINOMIAL,
    )


def interval(estimate: float, model: VarianceModel, *, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Student-t interval of a contrast's mean."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence=}")
    df = model.df()
    q = float(
        stats.norm.ppf(0.5 + confidence / 2) if math.isinf(df) else stats.t.ppf(0.5 + confidence / 2, df)
    )
    return estimate - q * model.se(), estimate + q * model.se()


def detectable(
    model: VarianceModel,
    *,
    seeds: int | None = None,
    images: int | None = None,
    confidence: float = 0.95,
    power: float = 0.8,
) -> float:
    """Smallest true difference the interval excludes zero for with probability ``power``."""
    df = model.df(seeds=seeds, images=images)
    dist = stats.norm if math.isinf(df) else stats.t(df)
    quantiles = float(dist.ppf(0.5 + confidence / 2)) + float(dist.ppf(power))
    return quantiles * math.sqrt(max(model.variance(seeds=seeds, images=images), 0.0))


def seeds_needed(model: VarianceModel, difference: float, *, limit: int = 200) -> int | None:
    """Fewest seeds (same test set) that detect ``difference`` with 80% power; None beyond ``limit``."""
    target = abs(difference)
    for k in range(model.seeds, limit + 1):
        if target > 0 and detectable(model, seeds=k) <= target:
            return k
    return None


def images_needed(model: VarianceModel, difference: float, *, factor_limit: int = 100) -> int | None:
    """Fewest test images (same seeds) that detect ``difference``; None when more images cannot."""
    target, low, high = abs(difference), model.images, model.images * factor_limit
    if target <= 0 or detectable(model, images=high) > target:
        return None
    while low < high:  # detectable() falls as images grow
        middle = (low + high) // 2
        low, high = (middle + 1, high) if detectable(model, images=middle) > target else (low, middle)
    return low


def joint_covariance(correct: np.ndarray) -> np.ndarray:
    """Covariance of strategies' mean accuracies from strategies x seeds x images correctness.

    The bilinear form of the ANOVA estimate (rows + columns - residual mean squares, over k m), made
    positive semi-definite by clipping eigenvalues at zero.
    """
    x = np.asarray(correct, dtype=float)
    _, k, m = x.shape
    grand = x.mean(axis=(1, 2))
    rows = x.mean(axis=2) - grand[:, None]
    cols = x.mean(axis=1) - grand[:, None]
    residual = x - rows[:, :, None] - cols[:, None, :] - grand[:, None, None]
    ms_row = m * rows @ rows.T / (k - 1)
    ms_col = k * cols @ cols.T / (m - 1)
    ms_e = np.einsum("aij,bij->ab", residual, residual) / ((k - 1) * (m - 1))
    return _psd((ms_row + ms_col - ms_e) / (k * m))


def binomial_covariance(accuracies: np.ndarray, *, images: int) -> np.ndarray:
    """Covariance of strategies' mean accuracies from seeds x strategies, binomial test-set part."""
    acc = np.asarray(accuracies, dtype=float)
    means = acc.mean(axis=0)
    seeds = np.atleast_2d(np.cov(acc, rowvar=False, ddof=1)) / acc.shape[0]
    return _psd(seeds + np.diag(means * (1 - means) / images))


def _psd(matrix: np.ndarray) -> np.ndarray:
    symmetric = (matrix + matrix.T) / 2
    values, vectors = np.linalg.eigh(symmetric)
    return np.asarray((vectors * np.clip(values, 0.0, None)) @ vectors.T)


def probability_best(
    means: np.ndarray, covariance: np.ndarray, *, df: float, draws: int = 20_000, seed: int = 0
) -> np.ndarray:
    """P(each strategy has the highest true mean), drawing means from a multivariate t around the estimate.

    Seeded, so a report built twice gives the same numbers. Exact ties in a draw go to the first.
    """
    mu = np.asarray(means, dtype=float)
    rng = np.random.default_rng(seed)
    values, vectors = np.linalg.eigh(_psd(np.asarray(covariance, dtype=float)))
    root = vectors * np.sqrt(np.clip(values, 0.0, None))
    z = rng.standard_normal((draws, mu.size)) @ root.T
    if not math.isinf(df):
        z *= np.sqrt(df / rng.chisquare(df, size=draws))[:, None]
    winners = np.argmax(mu[None, :] + z, axis=1)
    return np.bincount(winners, minlength=mu.size) / draws
