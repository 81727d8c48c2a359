"""What more labels would buy: learning-curve predictions at 2x and 4x the largest size, and whether the
recommendation would change there (pure; the rule is the paired one of ``recommend``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from tlbench.report.formatting import pct, signed_pp, size_key, size_label, sorted_sizes
from tlbench.report.learning_curve import StrategyCurve, per_class_sizes, strategy_curves
from tlbench.report.recommend import Recommendation
from tlbench.report.stats import Estimate, mean_ci
from tlbench.report.summarize import final_results

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
