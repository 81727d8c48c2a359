"""Which strategy to use at each data size, computed from the summary table (pure).

Rule, with a paired comparison of the size (``paired.py``): recommend the cheapest strategy (fewest
device-hours per run; ties: more accurate, then fewer FLOPs) that is not credibly worse than the best:
the 95% interval of its paired difference to the best includes 0 (the two cannot be told apart), or its
mean difference is within ``tolerance`` (absolute, 0.01 = 1 percentage point). An arm whose interval lies
wholly below 0 with a mean further behind than the tolerance is credibly worse, however cheap (the
default study's partial at n=50: -3.4 pp, interval -5.9 to -0.9 pp, was once recommended on the interval
alone reaching above -1 pp). Without one (fewer than two strategies with two shared seeds), the older
rule: the cheapest whose mean is within ``tolerance`` of the best mean. Along the Pareto frontier of the size,
each step says how much accuracy one more device-hour buys.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass

import pandas as pd

from tlbench.errors import ConfigError, TlbenchError
from tlbench.report.collect import PARAM_COLUMNS
from tlbench.report.paired import SizeComparison, StrategyComparison
from tlbench.report.render import pct, pp, sig, signed_pp, size_label, sorted_sizes
from tlbench.report.stats import pareto_front
from tlbench.report.tables import TUNE, final_results
from tlbench.tracking.names import OVERRIDES, TRAIN_STEPS


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
    """The best itself, a strategy that cannot be told from it (interval includes 0), or one whose mean
    difference is within ``tolerance``."""
    return s.high is None or s.high >= 0 or s.diff >= -tolerance - 1e-12


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
    where = f"{comparison.images} test images, {len(comparison.seeds_of(s))} seeds"
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
        if same:
            verdict = "are indistinguishable on this data"
        elif rs.low is not None and rs.low >= -tolerance:
            verdict = f"differ by less than {pp(tolerance)}"
        else:
            verdict = f"differ by {pp(-rs.diff)} on average, within the {pp(tolerance)} tolerance"
        pair = f"**{r.strategy}** and **{b.strategy}** {verdict}"
        text += f" {pair} ({_versus(rs, b.strategy)}); {_cost_ratio(r, b)}."
        if same:
            text += _resolution(rs, comparison, b.strategy)
    worse = [s for s in others if not_credibly_worse(s, tolerance=tolerance) is False]
    if worse:
        items = "; ".join(f"{s.strategy} ({_versus(s, b.strategy)})" for s in worse)
        text += f" Credibly worse than {b.strategy}: {items}."
    joint = [(s.strategy, s.p_best) for s in comparison.strategies if s.p_best is not None]
    chances = ", ".join(f"{name} {p:.0%}" for name, p in sorted(joint, key=lambda item: -item[1]))
    text += f" P(best): {chances}."
    alone = [s for s in comparison.strategies if s.p_best is None]
    if alone:
        text += (
            " Compared with the best on fewer seeds (no P(best)): "
            + ", ".join(f"{s.strategy} ({len(s.seeds)} seeds)" for s in alone)
            + "."
        )
    if comparison.left_out:
        text += f" Not compared: {', '.join(comparison.left_out)}."
    return text.strip()


# --- the recommended arm, as ``tlbench export`` needs it ------------------------------------------------

_PER_SEED_PARAMS = ("seed", "data_fingerprint")  # differ between the final runs of one configuration


@dataclass(frozen=True)
class FinalRun:
    """One completed final run of an arm (a seed of its chosen configuration)."""

    run_id: str  # the MLflow run
    seed: int
    optuna_trial: int | None  # its trial number in the Optuna study ``RecommendedArm.optuna_study``
    test_acc: float
    val_acc: float | None
    steps: int | None  # optimizer steps actually run (``train/steps``; None in older studies)


@dataclass(frozen=True)
class RecommendedArm:
    """The arm a study's report recommends at one data size (or the one asked for), and its configuration.

    ``params`` are the parameters every final run of the arm logged alike (the tuned configuration as the
    finals ran it; per-seed values such as ``seed`` left out); ``config_yaml`` is the full resolved
    configuration of one final run (``config_run_id``) for retraining it.
    """

    study: str
    n_per_class: str  # the size label: "10", "all"
    strategy: str  # the arm as the report names it ("linear_probe", or "linear_probe, 224px")
    strategy_name: str  # the registry name of its strategy
    recommended: bool  # the report's recommendation at this size (False: asked for by ``strategy``)
    cell: str  # the sweep cell (tag ``cell``) of its final runs
    optuna_study: str | None  # the Optuna study of its final runs
    tuned_from_trial: int | None  # the tuning trial (in the cell's Optuna study) its configuration came from
    tune_run_id: str | None  # that tuning trial's MLflow run
    params: dict[str, str]
    overrides: (
        tuple[str, ...] | None
    )  # the finals' Hydra overrides without the seed, when the runs carry them
    finals: tuple[FinalRun, ...]
    acc_mean: float  # mean test accuracy over the final seeds
    acc_half_width: float | None  # 95% Student-t half-width over the seeds; None with a single seed
    device_hours: float  # mean per final run
    verdict: str  # one plain sentence: the report's verdict on this arm at this size
    tolerance: float
    pooled_cells: tuple[str, ...] = ()  # other cells the report pools into this arm (a factor it ignores)
    config_run_id: str = ""
    config_yaml: str | None = None

    @property
    def seeds(self) -> int:
        return len(self.finals)

    @property
    def final_run_ids(self) -> tuple[str, ...]:
        return tuple(f.run_id for f in self.finals)

    @property
    def acc_low(self) -> float | None:
        """The interval's lower end, clipped at 0 (an accuracy)."""
        return None if self.acc_half_width is None else max(0.0, self.acc_mean - self.acc_half_width)

    @property
    def acc_high(self) -> float | None:
        """The interval's upper end, clipped at 1."""
        return None if self.acc_half_width is None else min(1.0, self.acc_mean + self.acc_half_width)


def _int_or_none(value: object) -> int | None:
    try:
        number = float(str(value))
    except ValueError:
        return None
    return int(number) if math.isfinite(number) else None


def _pick_size(study: str, sizes: list[str], size: str | None) -> str:
    if size is None:
        return sizes[-1]
    if size not in sizes:
        raise ConfigError(
            f"study '{study}' has no completed final runs at data size '{size}'; sizes with final runs: "
            f"{', '.join(sizes)}"
        )
    return size


def _pick_arm(study: str, rows: pd.DataFrame, size: str, strategy: str) -> str:
    arms = [str(a) for a in rows["strategy"]]
    if strategy in arms:
        return strategy
    named = [a for a in arms if a.split(", ")[0] == strategy]  # a plain strategy name for a labelled arm
    if len(named) == 1:
        return named[0]
    why = f"several arms of strategy '{strategy}'" if named else f"no arm '{strategy}'"
    raise ConfigError(
        f"study '{study}' has {why} with completed final runs at {size_label(size)}; name one of: "
        f"{', '.join(arms)}"
    )


def _common_params(finals: pd.DataFrame, columns: list[str]) -> dict[str, str]:
    out = {}
    for column in columns:
        values = {str(v) for v in finals[column] if not pd.isna(v) and str(v) != ""}
        if len(values) == 1 and column not in _PER_SEED_PARAMS:
            out[column] = values.pop()
    return out


def _overrides(finals: pd.DataFrame) -> tuple[str, ...] | None:
    """The finals' Hydra overrides (tag/param ``overrides``, a JSON list) without the seed."""
    if OVERRIDES not in finals:
        return None
    texts = {str(v) for v in finals[OVERRIDES] if not pd.isna(v)}
    lists = []
    for text in texts:
        try:
            value = json.loads(text)
        except ValueError:
            return None
        if not isinstance(value, list):
            return None
        lists.append(tuple(str(o) for o in value if not str(o).startswith("seed=")))
    return lists[0] if lists and len(set(lists)) == 1 else None


def verdict_sentence(rec: Recommendation, choice: Choice, *, unit: str) -> str:
    """One plain sentence (no Markdown): the arm's result and where the report places it."""
    if choice.acc_ci is None:
        spread = "a single final seed, no interval"
    elif choice.acc_ci == 0:  # a zero-width t interval would claim a certainty two equal seeds lack
        spread = f"all {choice.seeds} final seeds equal, no interval"
    else:
        low, high = max(0.0, choice.acc - choice.acc_ci), min(1.0, choice.acc + choice.acc_ci)
        spread = f"95% CI {pct(low)} to {pct(high)} over {choice.seeds} final seeds"
    head = (
        f"At {size_label(rec.n_per_class)}, {choice.strategy} reached {pct(choice.acc)} test accuracy "
        f"({spread}) for {sig(choice.cost)} {unit} per run"
    )
    r, b = rec.recommended, rec.best
    versus = rec.comparison.get(choice.strategy) if rec.comparison is not None else None
    gap = ""
    if versus is not None and versus.low is not None and versus.high is not None:
        gap = (
            f" (paired difference {signed_pp(versus.diff)}, 95% interval "
            f"{signed_pp(versus.low).removesuffix(' pp')} to {signed_pp(versus.high)})"
        )
    if choice.strategy == r.strategy:
        if len(rec.compared) == 1:
            return head + "; it is the only arm with final runs at this size, so nothing was compared."
        if r.strategy == b.strategy:
            return (
                head + f"; the report recommends it: the most accurate of {len(rec.compared)} arms compared."
            )
        return head + (
            "; the report recommends it as the cheapest arm not credibly worse than the most accurate, "
            f"{b.strategy} at {pct(b.acc)}{gap}."
        )
    if choice.strategy == b.strategy:
        return head + f"; it is the most accurate, but the report recommends the cheaper {r.strategy}."
    own = gap.replace("(paired", "(this arm's paired")
    return head + (
        f"; the report recommends {r.strategy} ({pct(r.acc)}) at this size, and the most accurate arm is "
        f"{b.strategy}{own}."
    )


def choose_arm(
    study: str,
    trials: pd.DataFrame,
    summary: pd.DataFrame,
    recommendations: list[Recommendation],
    *,
    size: str | None,
    strategy: str | None,
    tolerance: float,
    unit: str,
) -> RecommendedArm:
    """The recommended arm at ``size`` (default: the largest with final runs), or ``strategy``'s arm there.

    ``trials`` (labelled arms), ``summary`` and ``recommendations`` are the report's own. ``config_yaml``
    is left empty: reading it is the caller's I/O.
    """
    if not recommendations:
        raise TlbenchError(
            f"study '{study}' has no completed final runs, so the report recommends nothing; let the study "
            "finish (`make sweep` resumes it) or choose another study"
        )
    by_size = {r.n_per_class: r for r in recommendations}
    chosen_size = _pick_size(study, sorted_sizes(by_size), size)
    rec = by_size[chosen_size]
    rows = summary[summary["n_per_class"] == chosen_size]
    arm = rec.recommended.strategy if strategy is None else _pick_arm(study, rows, chosen_size, strategy)
    choice = _choice(rows[rows["strategy"] == arm].iloc[0])
    finals = final_results(trials)
    finals = finals[(finals["n_per_class"] == chosen_size) & (finals["strategy"] == arm)]
    cells = finals["cell"].astype("string").fillna("")
    by_cell = finals.assign(_cell=cells).groupby("_cell", sort=True)
    # an arm that pools cells (a factor the report does not separate): the cell best on validation
    cell = max(by_cell.groups, key=lambda c: (by_cell.get_group(c)["val/acc"].astype(float).mean(), str(c)))
    mine = finals[cells == cell].sort_values("seed")
    tuned = {str(v) for v in mine["tuned_from_trial"].dropna()}
    tuned_from = _int_or_none(tuned.pop()) if len(tuned) == 1 else None
    tune_run = trials[
        (trials["role"] == TUNE) & (trials["cell"].astype("string") == cell)
        & (pd.to_numeric(trials["trial_number"], errors="coerce") == tuned_from)
    ]  # fmt: skip
    optuna = {str(v) for v in mine["optuna_study"].dropna()}
    steps = mine[TRAIN_STEPS] if TRAIN_STEPS in mine else pd.Series([None] * len(mine), index=mine.index)
    runs = tuple(
        FinalRun(
            run_id=str(row["run_id"]),
            seed=int(row["seed"]),
            optuna_trial=_int_or_none(row["trial_number"]),
            test_acc=float(row["test/acc"]),
            val_acc=None if pd.isna(row["val/acc"]) else float(row["val/acc"]),
            steps=_int_or_none(step),
        )
        for (_, row), step in zip(mine.iterrows(), steps, strict=True)
    )
    plain = str(mine["strategy_name"].iloc[0]) if "strategy_name" in mine else arm
    return RecommendedArm(
        study=study,
        n_per_class=chosen_size,
        strategy=arm,
        strategy_name=plain,
        recommended=arm == rec.recommended.strategy,
        cell=str(cell),
        optuna_study=optuna.pop() if len(optuna) == 1 else None,
        tuned_from_trial=tuned_from,
        tune_run_id=str(tune_run["run_id"].iloc[-1]) if len(tune_run) and tuned_from is not None else None,
        params=_common_params(mine, list(PARAM_COLUMNS)),
        overrides=_overrides(mine),
        finals=runs,
        acc_mean=choice.acc,
        acc_half_width=choice.acc_ci,
        device_hours=choice.cost,
        verdict=verdict_sentence(rec, choice, unit=unit),
        tolerance=tolerance,
        pooled_cells=tuple(str(c) for c in by_cell.groups if c != cell),
        config_run_id=runs[0].run_id,
    )
