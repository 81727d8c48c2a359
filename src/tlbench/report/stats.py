"""Means with Student-t confidence intervals over seeds, and the accuracy-cost Pareto frontier."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


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
