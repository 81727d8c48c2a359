"""Learning curves: a saturating fit of test accuracy against labelled images per class (pure).

Model: ``acc(n) = a - b * n ** -c`` with ``a <= 1`` (the plateau), ``b >= 0`` and ``c`` on a grid in
[0.05, 2] (the exponent fixed at 0.5 when a strategy has only two sizes). For each ``c`` the fit is a
linear least-squares problem, so no optimiser can fail to converge. Each seed gets its own curve (a
seed's subsets are nested across sizes, ``data/splits.py``); predictions are the mean over the seeds'
curves with a Student-t interval over them: seed variation only, not the choice of the curve.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tlbench.report.formatting import size_key, sorted_strategies
from tlbench.report.stats import Estimate, mean_ci
from tlbench.report.summarize import final_results

EXPONENTS = tuple(float(c) for c in np.geomspace(0.05, 2.0, 60))
TWO_SIZE_EXPONENT = 0.5


@dataclass(frozen=True)
class Curve:
    plateau: float  # a
    scale: float  # b
    exponent: float  # c

    def predict(self, n: float) -> float:
        return self.plateau - self.scale * n**-self.exponent


def _fit_linear(x: np.ndarray, y: np.ndarray, c: float) -> tuple[Curve, float]:
    u = x**-c
    design = np.column_stack([np.ones_like(u), -u])
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    if b < 0:  # falling with more data is noise: a flat line
        a, b = float(y.mean()), 0.0
    if a > 1:  # the plateau cannot pass 100%
        a, b = 1.0, max(0.0, float(np.dot(1 - y, u) / np.dot(u, u)))
    curve = Curve(float(a), float(b), c)
    return curve, float(np.sum((y - np.array([curve.predict(v) for v in x])) ** 2))


def _fit_to_full_accuracy(x: np.ndarray, y: np.ndarray, c: float) -> tuple[Curve, float]:
    """The plateau fixed at 100%: ``1 - acc = b n^-c``."""
    u = x**-c
    curve = Curve(1.0, max(0.0, float(np.dot(1 - y, u) / np.dot(u, u))), c)
    return curve, float(np.sum((y - np.array([curve.predict(v) for v in x])) ** 2))


def fit_curve(n_per_class: Sequence[float], accuracy: Sequence[float]) -> Curve:
    """The least-squares saturating curve through (n, accuracy) points at two or more distinct n.

    Two sizes fit any exponent exactly, so the exponent is fixed at 0.5, unless that would put the
    plateau above 100%: then the plateau is 100% and the exponent is fitted.
    """
    x, y = np.asarray(n_per_class, dtype=float), np.asarray(accuracy, dtype=float)
    if x.shape != y.shape or np.unique(x).size < 2 or (x <= 0).any():
        raise ValueError(f"need points at >= 2 distinct positive n, got {x.tolist()=}")
    if np.unique(x).size >= 3:
        return min((_fit_linear(x, y, c) for c in EXPONENTS), key=lambda fit: fit[1])[0]
    fixed = _fit_linear(x, y, TWO_SIZE_EXPONENT)[0]
    if fixed.plateau < 1.0:
        return fixed
    return min((_fit_to_full_accuracy(x, y, c) for c in EXPONENTS), key=lambda fit: fit[1])[0]


def per_class_sizes(rows: pd.DataFrame) -> pd.Series:
    """Training images per class of each run: n_train / n_classes, else the numeric n_per_class."""
    logged = pd.to_numeric(rows["n_train"], errors="coerce") / pd.to_numeric(
        rows["n_classes"], errors="coerce"
    )
    labelled = rows["n_per_class"].map(lambda s: size_key(str(s)))
    return logged.where(logged.notna(), labelled).astype(float)


@dataclass(frozen=True)
class StrategyCurve:
    strategy: str
    sizes: tuple[float, ...]  # n per class fitted
    seeds: tuple[int, ...]  # seeds with a curve of their own
    curves: tuple[Curve, ...]
    predictions: tuple[Estimate, ...]  # at the targets, over the seeds' curves


def seed_curves(rows: pd.DataFrame, *, max_n: float = math.inf) -> tuple[tuple[int, Curve], ...]:
    """One curve per seed from one strategy's final runs at sizes up to ``max_n``."""
    data = rows.assign(_n=per_class_sizes(rows)).dropna(subset=["_n", "seed"])
    data = data[np.isfinite(data["_n"]) & (data["_n"] <= max_n)]
    out = []
    for seed, group in data.groupby("seed"):
        if group["_n"].nunique() >= 2:
            out.append((int(seed), fit_curve(group["_n"].tolist(), group["test/acc"].astype(float).tolist())))
    return tuple(out)


def strategy_curves(
    trials: pd.DataFrame, targets: Sequence[float], *, max_n: float = math.inf, confidence: float = 0.95
) -> list[StrategyCurve]:
    """Per strategy with >= 2 sizes: the seeds' curves and their predictions at ``targets``."""
    finals = final_results(trials)
    out = []
    for strategy in sorted_strategies(finals["strategy"]):
        rows = finals[finals["strategy"] == strategy]
        fits = seed_curves(rows, max_n=max_n)
        if not fits:
            continue
        sizes = per_class_sizes(rows)
        predictions = tuple(mean_ci([c.predict(t) for _, c in fits], confidence=confidence) for t in targets)
        out.append(
            StrategyCurve(
                strategy,
                tuple(sorted(set(sizes[sizes <= max_n].dropna().tolist()))),
                tuple(s for s, _ in fits),
                tuple(c for _, c in fits),
                predictions,
            )
        )
    return out


@dataclass(frozen=True)
class HoldoutPoint:
    strategy: str
    n_per_class: str
    predicted: float
    observed: float

    @property
    def error(self) -> float:
        return self.predicted - self.observed


def holdout_check(trials: pd.DataFrame, *, fit_max_n: float = 20) -> list[HoldoutPoint]:
    """Fit on sizes <= ``fit_max_n``, predict the larger ones, compare with their measured mean."""
    finals = final_results(trials)
    finals = finals.assign(_n=per_class_sizes(finals))
    out = []
    for strategy in sorted_strategies(finals["strategy"]):
        rows = finals[finals["strategy"] == strategy]
        fits = seed_curves(rows, max_n=fit_max_n)
        if not fits:
            continue
        for size, group in rows[rows["_n"] > fit_max_n].groupby("n_per_class"):
            n = float(group["_n"].mean())
            predicted = float(np.mean([c.predict(n) for _, c in fits]))
            out.append(HoldoutPoint(strategy, str(size), predicted, float(group["test/acc"].mean())))
    return out


@dataclass(frozen=True)
class Fall:
    """An arm whose mean test accuracy drops as labelled data grows (more data should not hurt)."""

    strategy: str
    from_size: str
    to_size: str
    from_acc: float
    to_acc: float


def falling_curves(summary: pd.DataFrame, *, drop: float = 0.01) -> list[Fall]:
    """Consecutive sizes (in summary order) where an arm's mean test accuracy falls by more than ``drop``."""
    out = []
    for strategy in sorted_strategies(summary["strategy"]):
        rows = summary[summary["strategy"] == strategy]
        means = [(str(r["n_per_class"]), float(r["acc_mean"])) for _, r in rows.iterrows()]
        out += [
            Fall(strategy, a, b, acc_a, acc_b)
            for (a, acc_a), (b, acc_b) in itertools.pairwise(means)
            if acc_a - acc_b > drop
        ]
    return out
