"""Which strategy to use at each data size, computed from the summary table (pure).

Rule: among strategies whose mean test accuracy is within ``tolerance`` (absolute, 0.01 = 1 percentage
point) of the best mean, recommend the one with the fewest device-hours per run (ties: more accurate,
then fewer FLOPs). Along the Pareto frontier of the size, each step says how much accuracy one more
device-hour buys.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pandas as pd

from tlbench.report.formatting import pct, pp, sig, size_label, sorted_sizes
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


def recommend(summary: pd.DataFrame, *, tolerance: float) -> list[Recommendation]:
    """One recommendation per data size that has at least one completed final run."""
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance is an absolute accuracy in [0, 1), got {tolerance=}")
    out = []
    for size in sorted_sizes(summary["n_per_class"]):
        rows = summary[summary["n_per_class"] == size].sort_values(["train_flops"], na_position="last")
        choices = [_choice(r) for _, r in rows.iterrows()]
        best = max(choices, key=lambda c: (c.acc, -_cost_key(c)[0]))
        eligible = [c for c in choices if c.acc >= best.acc - tolerance - 1e-12]
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
