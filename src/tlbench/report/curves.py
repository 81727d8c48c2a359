"""Learning curves and what more labels would buy (pure).

A saturating fit of test accuracy against labelled images per class, per arm and seed; predictions at
2x and 4x the largest size, and whether the recommendation (the paired rule of ``recommend``) would
change there; arms whose accuracy falls as data grows.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import OptimizeWarning, curve_fit

from tlbench.report.recommend import Recommendation
from tlbench.report.render import pct, signed_pp, size_key, size_label, sorted_sizes, sorted_strategies
from tlbench.report.stats import Estimate, mean_ci
from tlbench.report.tables import final_results

# --- learning curves ----------------------------------------------------------------------------------------
# Model: ``acc(n) = a - b * n ** -c`` with ``a <= 1`` (the plateau), ``b >= 0`` and ``c`` in [0.05, 2]
# (the exponent fixed at 0.5 when a strategy has only two sizes), fitted by ``scipy.optimize.curve_fit``
# within those bounds from a few starting exponents (the fit is not convex in ``c``). Each seed gets its
# own curve (a seed's subsets are nested across sizes, ``data/splits.py``); predictions are the mean over
# the seeds' curves with a Student-t interval over them: seed variation only, not the choice of the curve.

EXPONENT_RANGE = (0.05, 2.0)
STARTS = (0.1, 0.5, 1.5)  # starting exponents: the lowest squared error of the three fits wins
TWO_SIZE_EXPONENT = 0.5
_AT_BOUND = 1e-9  # a parameter this close to its bound is on it (the solver stays strictly inside)


@dataclass(frozen=True)
class Curve:
    plateau: float  # a
    scale: float  # b
    exponent: float  # c

    def predict(self, n: float) -> float:
        return self.plateau - self.scale * n**-self.exponent


def _model(n: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return np.asarray(a - b * n**-c)


def _fit(
    x: np.ndarray, y: np.ndarray, *, plateau: float | None, exponent: float | None
) -> tuple[Curve, float]:
    """Least squares over the parameters not fixed, within their bounds; (curve, squared error)."""
    free = [name for name, fixed in (("a", plateau), ("b", None), ("c", exponent)) if fixed is None]
    low = {"a": -np.inf, "b": 0.0, "c": EXPONENT_RANGE[0]}
    high = {"a": 1.0, "b": np.inf, "c": EXPONENT_RANGE[1]}

    def model(n: np.ndarray, *params: float) -> np.ndarray:
        given = dict(zip(free, params, strict=True))
        return _model(n, given.get("a", plateau or 0.0), given["b"], given.get("c", exponent or 0.0))

    best: tuple[Curve, float] | None = None
    for c0 in STARTS if exponent is None else (exponent,):
        a0 = plateau if plateau is not None else min(float(y.max()) + 0.01, 1.0 - 1e-3)
        b0 = max((a0 - float(y.min())) * float(x.min()) ** c0, 1e-3)
        start = {"a": a0, "b": b0, "c": c0}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)  # no covariance from few points: not needed
            try:
                bounds = ([low[k] for k in free], [high[k] for k in free])
                params, _ = curve_fit(
                    model, x, y, p0=[start[k] for k in free], bounds=bounds,
                    xtol=1e-14, ftol=1e-14, gtol=1e-14, max_nfev=10_000,
                )  # fmt: skip
            except RuntimeError:  # this start did not converge: another may
                continue
        given = dict(zip(free, (float(v) for v in params), strict=True))
        curve = Curve(given.get("a", plateau or 0.0), given["b"], given.get("c", exponent or 0.0))
        if curve.scale <= _AT_BOUND:  # falling or flat with more data is noise: the flat least-squares line
            curve = Curve(float(y.mean()) if plateau is None else plateau, 0.0, curve.exponent)
        error = float(np.sum((y - _model(x, curve.plateau, curve.scale, curve.exponent)) ** 2))
        if best is None or error < best[1]:
            best = (curve, error)
    if best is None:
        raise ValueError(f"no saturating curve fits {x.tolist()=} {y.tolist()=}")
    return best


def fit_curve(n_per_class: Sequence[float], accuracy: Sequence[float]) -> Curve:
    """The least-squares saturating curve through (n, accuracy) points at two or more distinct n.

    Two sizes fit any exponent exactly, so the exponent is fixed at 0.5, unless that would put the
    plateau above 100%: then the plateau is 100% and the exponent is fitted.
    """
    x, y = np.asarray(n_per_class, dtype=float), np.asarray(accuracy, dtype=float)
    if x.shape != y.shape or np.unique(x).size < 2 or (x <= 0).any():
        raise ValueError(f"need points at >= 2 distinct positive n, got {x.tolist()=}")
    if np.unique(x).size >= 3:
        return _fit(x, y, plateau=None, exponent=None)[0]
    fixed = _fit(x, y, plateau=None, exponent=TWO_SIZE_EXPONENT)[0]
    if fixed.plateau < 1.0 - _AT_BOUND:
        return fixed
    return _fit(x, y, plateau=1.0, exponent=None)[0]


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


# --- what more labels would buy -----------------------------------------------------------------------------
# recommendation would change there (pure; the rule is the paired one of ``recommend``).

FACTORS = (2, 4)


@dataclass(frozen=True)
class Outlook:
    largest: str  # the largest measured size label
    largest_n: float  # its training images per class
    targets: tuple[float, ...]  # FACTORS x largest_n
    curves: tuple[StrategyCurve, ...]
    current: str | None  # recommended at the largest size
    predicted_best: str  # highest predicted mean at 2x
    recommended: str  # the same rule applied to the 2x predictions
    lead: Estimate | None  # predicted_best minus current at 2x, over the seeds' curves


def _diff_at(a: StrategyCurve, b: StrategyCurve, target: float, confidence: float) -> Estimate | None:
    """a minus b predicted at ``target``, paired by seed."""
    seeds = sorted(set(a.seeds) & set(b.seeds))
    if not seeds:
        return None
    ca, cb = dict(zip(a.seeds, a.curves, strict=True)), dict(zip(b.seeds, b.curves, strict=True))
    return mean_ci([ca[s].predict(target) - cb[s].predict(target) for s in seeds], confidence=confidence)


def outlook(
    trials: pd.DataFrame,
    summary: pd.DataFrame,
    recommendations: list[Recommendation],
    *,
    tolerance: float,
    confidence: float = 0.95,
) -> Outlook | None:
    """None when fewer than two sizes or two strategies can be fitted."""
    finals = final_results(trials)
    if finals.empty:
        return None
    largest = sorted_sizes(finals["n_per_class"])[-1]
    at_largest = finals[finals["n_per_class"] == largest]
    largest_n = float(per_class_sizes(at_largest).mean())
    if math.isnan(largest_n) or math.isinf(largest_n):
        largest_n = size_key(largest)
    targets = tuple(f * largest_n for f in FACTORS)
    curves = tuple(strategy_curves(trials, targets, confidence=confidence))
    if len(curves) < 2 or not math.isfinite(largest_n):
        return None
    by_name = {c.strategy: c for c in curves}
    best = max(curves, key=lambda c: c.predictions[0].mean)
    cost = {
        str(r["strategy"]): float(r["device_hours"])
        for _, r in summary[summary["n_per_class"] == largest].iterrows()
    }
    eligible = []
    for curve in curves:
        diff = _diff_at(curve, best, targets[0], confidence) if curve is not best else None
        if curve is best or diff is None or (diff.high if diff.high is not None else diff.mean) > -tolerance:
            eligible.append(curve)
    chosen = min(eligible, key=lambda c: (_finite(cost.get(c.strategy)), -c.predictions[0].mean))
    current = next((r.recommended.strategy for r in recommendations if r.n_per_class == largest), None)
    lead = None
    if current in by_name and current != best.strategy:
        lead = _diff_at(best, by_name[current], targets[0], confidence)
    return Outlook(largest, largest_n, targets, curves, current, best.strategy, chosen.strategy, lead)


def _finite(x: float | None) -> float:
    return math.inf if x is None or math.isnan(x) else x


def outlook_sentence(o: Outlook) -> str:
    """With twice the labels, would the recommendation change? One sentence with the numbers."""
    where = f"≈{o.targets[0]:.0f} images per class, twice {size_label(o.largest)}; extrapolated"
    by_name = {c.strategy: c for c in o.curves}
    best = by_name[o.predicted_best].predictions[0]
    if o.current is None:
        return (
            f"With twice the labels ({where}) the curves predict **{o.predicted_best}** ({pct(best.mean)})."
        )
    lead = f" (it is also the predicted best, {pct(best.mean)})" if o.current == o.predicted_best else ""
    if o.lead is not None:
        interval = (
            f", 95% interval {signed_pp(o.lead.low)} to {signed_pp(o.lead.high)}"
            if o.lead.low is not None and o.lead.high is not None
            else ", a single seed"
        )
        lead = f" (**{o.predicted_best}** ahead of **{o.current}** by {signed_pp(o.lead.mean)}{interval})"
    if o.recommended == o.current:
        return (
            f"With twice the labels ({where}), would the recommendation change? No: **{o.current}** stays "
            f"the cheapest strategy not credibly worse than the predicted best{lead}."
        )
    return (
        f"With twice the labels ({where}), would the recommendation change? Yes, to **{o.recommended}**"
        f"{lead}, if the fitted curves hold and costs rank as at {size_label(o.largest)}."
    )
