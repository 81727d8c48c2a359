"""Which strategy to use at each data size, computed from the summary table (pure).

Rule, with a paired comparison of the size (``paired.py``): recommend the cheapest strategy (fewest
device-hours per run; ties: more accurate, then fewer FLOPs) that is not credibly worse than the best,
i.e. whose 95% interval of the difference to the best reaches above ``-tolerance`` (absolute, 0.01 = 1
percentage point). Without one (fewer than two strategies with two shared seeds), the older rule: the
cheapest whose mean is within ``tolerance`` of the best mean. Along the Pareto frontier of the size,
each step says how much accuracy one more device-hour buys.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pandas as pd

from tlbench.report.formatting import pct, pp, sig, signed_pp, size_label, sorted_sizes
from tlbench.report.paired import SizeComparison, StrategyComparison
from tlbench.report.stats import pareto_front


@dataclass(frozen=True)
class Step:
    """Moving from a cheaper frontier strategy to the next more accurate one."""

    from_strategy: str
    to_strategy: str
    extra_acc: float
    extra_cost: float

    @property
    def acc_per_cost(self) -> float | None:
        """Accuracy gained per extra device-hour; None when the step costs nothing extra."""
        return self.extra_acc / self.extra_cost if self.extra_cost > 0 else None


@dataclass(frozen=True)
class Choice:
    strategy: str
    acc: float
    acc_ci: float | None
    seeds: int
    cost: float


@dataclass(frozen=True)
class Recommendation:
    n_per_class: str
    recommended: Choice
    best: Choice
    cheapest: Choice
    compared: tuple[str, ...]
    frontier: tuple[Step, ...]
    comparison: SizeComparison | None = None  # the paired comparison the rule used, when there is one

    @property
    def gap(self) -> float:
        """Accuracy given up by taking the recommendation instead of the best (>= 0)."""
        return self.best.acc - self.recommended.acc

    @property
    def within_noise(self) -> bool:
        """The gap is smaller than the two confidence intervals together (False when any is missing)."""
        a, b = self.best.acc_ci, self.recommended.acc_ci
        return a is not None and b is not None and self.gap <= a + b

    @property
    def single_seed(self) -> bool:
        return self.recommended.seeds < 2 or self.best.seeds < 2


def _choice(row: pd.Series) -> Choice:
    ci = float(row["acc_ci"])
    return Choice(
        strategy=str(row["strategy"]),
        acc=float(row["acc_mean"]),
        acc_ci=None if math.isnan(ci) else ci,
        seeds=int(row["seeds"]),
        cost=float(row["device_hours"]),
    )


def _cost_key(choice: Choice) -> tuple[float, float]:
    cost = math.inf if math.isnan(choice.cost) else choice.cost
    return (cost, -choice.acc)


def not_credibly_worse(s: StrategyComparison, *, tolerance: float) -> bool:
    """The best itself, or a strategy whose interval of the difference reaches above ``-tolerance``."""
    return s.high is None or s.high > -tolerance


def recommend(
    summary: pd.DataFrame, *, tolerance: float, comparisons: list[SizeComparison] | None = None
) -> list[Recommendation]:
    """One recommendation per data size that has at least one completed final run."""
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance is an absolute accuracy in [0, 1), got {tolerance=}")
    paired = {c.n_per_class: c for c in comparisons or []}
    out = []
    for size in sorted_sizes(summary["n_per_class"]):
        rows = summary[summary["n_per_class"] == size].sort_values(["train_flops"], na_position="last")
        choices = [_choice(r) for _, r in rows.iterrows()]
        best = max(choices, key=lambda c: (c.acc, -_cost_key(c)[0]))
        eligible = [c for c in choices if c.acc >= best.acc - tolerance - 1e-12]
        comparison = paired.get(size)
        if comparison is not None and any(c.strategy == comparison.best for c in choices):
            best = next(c for c in choices if c.strategy == comparison.best)
            kept = {s.strategy for s in comparison.strategies if not_credibly_worse(s, tolerance=tolerance)}
            eligible = [c for c in choices if c.strategy in kept]
        else:
            comparison = None
        recommended = min(eligible, key=_cost_key)  # min() keeps the first: fewer FLOPs on exact ties
        cheapest = min(choices, key=_cost_key)
        front = [choices[i] for i in pareto_front([c.cost for c in choices], [c.acc for c in choices])]
        steps = tuple(
            Step(a.strategy, b.strategy, extra_acc=b.acc - a.acc, extra_cost=b.cost - a.cost)
            for a, b in itertools.pairwise(front)
        )
        out.append(
            Recommendation(
                n_per_class=size,
                recommended=recommended,
                best=best,
                cheapest=cheapest,
                compared=tuple(c.strategy for c in choices),
                frontier=steps,
                comparison=comparison,
            )
        )
    return out


def _spread(choice: Choice) -> str:
    """How sure the mean is: ``± 1.2 pp, 3 seeds`` or ``single seed``."""
    return "single seed" if choice.acc_ci is None else f"± {pp(choice.acc_ci)}, {choice.seeds} seeds"


def _rate(extra_acc: float, extra_cost: float, unit: str) -> str:
    if extra_cost <= 0:
        return f"+{pp(extra_acc)} at no extra {unit}"
    per = extra_acc / extra_cost
    return f"+{pp(extra_acc)} for +{sig(extra_cost)} {unit}, i.e. {sig(100 * per)} pp per extra {unit[:-1]}"


def recommendation_text(rec: Recommendation, *, tolerance: float, unit: str) -> str:
    """Plain words with the table's numbers; ``unit`` is e.g. "device-hours" or "GPU-hours"."""
    r, b, c = rec.recommended, rec.best, rec.cheapest
    head = f"**{size_label(rec.n_per_class)}:** "
    facts = f"{pct(r.acc)} test accuracy ({_spread(r)}) for {sig(r.cost)} {unit} per run"
    if rec.comparison is not None and len(rec.compared) > 1:
        return head + f"use **{r.strategy}**: {facts}. " + paired_text(rec, tolerance=tolerance)
    if len(rec.compared) == 1:
        return (
            head
            + f"only **{r.strategy}** has completed final runs at this size: {facts}. Nothing to compare."
        )
    text = head + f"use **{r.strategy}**: {facts}."
    if r.strategy != b.strategy:
        ratio = f"{sig(b.cost / r.cost, 2)}× the {unit}" if r.cost > 0 else f"{sig(b.cost)} {unit}"
        text += (
            f" The most accurate, **{b.strategy}** at {pct(b.acc)} ({_spread(b)}), is only {pp(rec.gap)} "
            f"better (tolerance {pp(tolerance)}) and needs {ratio}: {_rate(rec.gap, b.cost - r.cost, unit)}."
        )
        if rec.within_noise:
            text += " The difference is within the 95% confidence intervals."
    elif r.strategy != c.strategy:
        text += (
            f" It is the most accurate, and nothing within {pp(tolerance)} of it is cheaper. Against the "
            f"cheapest, **{c.strategy}** at {pct(c.acc)} for {sig(c.cost)} {unit}, it buys "
            f"{_rate(r.acc - c.acc, r.cost - c.cost, unit)}."
        )
    else:
        text += " It is both the most accurate and the cheapest of the strategies compared."
    if rec.single_seed:
        text += " Single-seed results have no confidence interval: treat small differences as noise."
    return text


def frontier_text(rec: Recommendation, *, unit: str) -> str:
    """The accuracy bought per extra device-hour along this size's Pareto frontier."""
    if not rec.frontier:
        return f"{size_label(rec.n_per_class)}: one strategy is on the frontier; no trade-off to buy."
    steps = "; ".join(
        f"{s.from_strategy} → {s.to_strategy}: {_rate(s.extra_acc, s.extra_cost, unit)}" for s in rec.frontier
    )
    return f"{size_label(rec.n_per_class)}: {steps}."


def _interval(low: float | None, high: float | None) -> str:
    return f"95% interval {signed_pp(low).removesuffix(' pp')} to {signed_pp(high)}"


def _versus(s: StrategyComparison, best: str) -> str:
    """``difference +3.3 pp for partial, 95% interval −6.0 to +12.6 pp`` (the best minus ``s``)."""
    low, high = (None, None) if s.low is None or s.high is None else (-s.high, -s.low)
    return f"difference {signed_pp(-s.diff)} for {best}, {_interval(low, high)}"


def _cost_ratio(r: Choice, b: Choice) -> str:
    if r.cost <= 0 or math.isnan(r.cost) or math.isnan(b.cost):
        return f"{r.strategy} costs {sig(r.cost)} against {sig(b.cost)}"
    ratio = b.cost / r.cost
    if ratio >= 1.5:
        return f"{r.strategy} costs 1/{sig(ratio, 2)} as much"
    return f"{r.strategy} costs {sig(1 / ratio, 2)}× as much"


def _resolution(s: StrategyComparison, comparison: SizeComparison, best: str) -> str:
    """How much more data would tell ``s`` and the best apart (80% power, same rule of thumb)."""
    where = f"{comparison.images} test images, {len(comparison.seeds)} seeds"
    text = f" At this test size ({where}) a difference must be about {pp(s.detectable)} to be detected"
    if s.diff == 0:
        return text + "."
    options = []
    if s.seeds_needed is not None:
        options.append(f"about {s.seeds_needed} seeds")
    if s.images_needed is not None:
        options.append(f"about {s.images_needed} test images")
    need = " or ".join(options) if options else "more than 200 seeds or 100× the test images"
    if s.images_needed is None and s.seeds_needed is not None:
        need += " (more test images alone would not: seed variation limits it)"
    return text + f"; telling {s.strategy} from {best} ({signed_pp(-s.diff)}) would take {need}."


def paired_text(rec: Recommendation, *, tolerance: float) -> str:
    """The paired verdict: what can and cannot be told apart at this size, in plain words."""
    comparison = rec.comparison
    assert comparison is not None
    r, b = rec.recommended, rec.best
    others = [s for s in comparison.strategies if s.strategy != b.strategy]
    tied = [s for s in others if s.high is not None and s.high >= 0]
    text = ""
    if len(tied) == len(others):
        text += (
            f"None of the {len(comparison.strategies)} strategies compared can be told apart on this data: "
            f"every difference to the most accurate, **{b.strategy}**, has a 95% interval that includes 0, "
            f"so the cheapest is the choice."
        )
        if r.strategy == b.strategy and others:
            text += _resolution(max(others, key=lambda s: s.diff), comparison, b.strategy)
    if r.strategy != b.strategy:
        rs = comparison.get(r.strategy)
        assert rs is not None
        same = rs.high is not None and rs.high >= 0
        verdict = "are indistinguishable on this data" if same else f"differ by less than {pp(tolerance)}"
        pair = f"**{r.strategy}** and **{b.strategy}** {verdict}"
        text += f" {pair} ({_versus(rs, b.strategy)}); {_cost_ratio(r, b)}."
        if same:
            text += _resolution(rs, comparison, b.strategy)
    worse = [s for s in others if not_credibly_worse(s, tolerance=tolerance) is False]
    if worse:
        items = "; ".join(f"{s.strategy} ({_versus(s, b.strategy)})" for s in worse)
        text += f" Credibly worse than {b.strategy}: {items}."
    chances = ", ".join(
        f"{s.strategy} {s.p_best:.0%}" for s in sorted(comparison.strategies, key=lambda s: -s.p_best)
    )
    text += f" P(best): {chances}."
    if comparison.left_out:
        text += f" Not compared: {', '.join(comparison.left_out)}."
    return text.strip()
