"""Which strategy to use at each data size, and whether more labels would change it (pure).

Rule: the cheapest strategy (device-hours per run; ties: more accurate, then fewer FLOPs) not credibly
worse than the best: its paired 95% interval to the best includes 0, or its mean difference is within
``tolerance``. Both are needed: the default study's partial at n=50 (-3.4 pp, interval -5.9 to -0.9 pp)
was once recommended on the interval alone. Without a paired comparison: the cheapest whose mean is
within ``tolerance`` of the best mean.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import OptimizeWarning, curve_fit

from tlbench.errors import ConfigError, TlbenchError
from tlbench.report.render import (
    pct,
    pp,
    sig,
    signed_pp,
    size_key,
    size_label,
    sorted_sizes,
    sorted_strategies,
)
from tlbench.report.stats import (
    BINOMIAL,
    PER_IMAGE,
    Estimate,
    VarianceModel,
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
from tlbench.report.tables import PARAM_COLUMNS, final_results, groups
from tlbench.tracking import names as N
from tlbench.tracking.names import OVERRIDES, TRAIN_STEPS
from tlbench.tracking.study import RunPredictions

# Paired comparisons at each data size, the best against each other strategy. A seed fixes the training
# subset (``data/load.py``) and the test set depends only on ``split_seed``, so runs on one seed are
# paired; the code checks that (``data_fingerprint``, ``split_seed``) and pairs only shared seeds.


@dataclass(frozen=True)
class StrategyComparison:
    """One strategy at one size against the best there (the best itself: diff 0, no interval)."""

    strategy: str
    mean: float  # mean test accuracy over its paired seeds
    diff: float  # mean minus the best's mean over the same seeds
    low: float | None
    high: float | None
    p_best: float | None  # None for an arm compared with the best alone (on fewer seeds than the rest)
    detectable: float | None = None  # difference detected with 80% power at this test size and seeds
    seeds_needed: int | None = None  # to detect ``diff`` with 80% power (same test set)
    images_needed: int | None = None  # to detect ``diff`` with 80% power (same seeds)
    seeds: tuple[int, ...] = ()  # its own paired seeds when compared with the best alone; () = the size's


@dataclass(frozen=True)
class SizeComparison:
    n_per_class: str
    best: str
    strategies: tuple[StrategyComparison, ...]
    seeds: tuple[int, ...]  # the seeds every arm of the joint comparison has
    images: int
    basis: str  # PER_IMAGE | BINOMIAL
    left_out: tuple[str, ...] = ()  # "scratch (1 seed)"
    notes: tuple[str, ...] = ()  # pairing problems found

    def get(self, strategy: str) -> StrategyComparison | None:
        return next((s for s in self.strategies if s.strategy == strategy), None)

    def seeds_of(self, s: StrategyComparison) -> tuple[int, ...]:
        """The seeds ``s`` was paired with the best on."""
        return s.seeds or self.seeds


def _latest_per_seed(rows: pd.DataFrame) -> pd.DataFrame:
    """One final run per (strategy, seed): the latest, should a seed have been re-run."""
    rows = rows[rows["seed"].notna()]
    return rows.sort_values("start_time_ms", na_position="first").drop_duplicates(
        ["strategy", "seed"], keep="last"
    )


def _paired_seeds(
    rows: pd.DataFrame, *, anchor: str | None = None
) -> tuple[list[str], list[int], list[str], list[str]]:
    """The arms compared jointly, their shared seeds, the arms to pair with the best alone, those left out.

    Racing gives arms different seed counts, so the joint comparison holds the arms with every seed of
    the two best-seeded arms (or of ``anchor``: a leader the race stopped giving seeds to); the others
    are paired with the best on the seeds the two share.
    """
    seeds = {s: set(g["seed"].astype(int)) for s, g in rows.groupby("strategy")}
    order = sorted_strategies(seeds)
    left = [f"{s} (1 seed)" for s in order if len(seeds[s]) < 2]
    kept = [s for s in order if len(seeds[s]) >= 2]
    ranked = sorted(kept, key=lambda s: (-len(seeds[s]), order.index(s)))
    if anchor is not None and anchor in kept:
        ranked = [anchor, *(s for s in ranked if s != anchor)]
    core_seeds = seeds[ranked[0]] & seeds[ranked[1]] if len(ranked) >= 2 else set()
    if len(core_seeds) >= 2:
        core = [s for s in kept if seeds[s] >= core_seeds]
        return core, sorted(core_seeds), [s for s in kept if s not in core], left
    common = set.intersection(*(seeds[s] for s in kept)) if kept else set()
    core = list(kept)
    while len(common) < 2 and len(core) > 2:  # drop the arm with the fewest seeds until pairs remain
        worst = min(core, key=lambda s: (len(seeds[s]), -order.index(s)))
        core.remove(worst)
        common = set.intersection(*(seeds[s] for s in core))
    if len(common) < 2:
        return [], [], [], left + [f"{s} (no 2 seeds in common with the others)" for s in kept]
    return core, sorted(common), [s for s in kept if s not in core], left


def _pairing_notes(rows: pd.DataFrame, size: str) -> list[str]:
    notes = []
    for column, what in (("data_fingerprint", "training subsets"), ("split_seed", "test sets")):
        for seed, group in rows.groupby("seed"):
            values = {str(v) for v in group[column].dropna()}
            if len(values) > 1:
                notes.append(
                    f"{size_label(size)}, seed {seed}: the strategies' {what} differ ({column} "
                    f"{', '.join(sorted(values))}); they are compared as if paired"
                )
    return notes


def _correctness(
    rows: pd.DataFrame, predictions: Mapping[str, RunPredictions]
) -> tuple[np.ndarray | None, str | None]:
    """strategies x seeds x images correctness, or why per-image pairing is not possible."""
    runs = list(rows["run_id"])
    missing = [r for r in runs if r not in predictions]
    if missing:
        return None, f"{len(missing)} of {len(runs)} final runs lack per-image test predictions"
    labels = {predictions[r].labels for r in runs}
    if len(labels) > 1:
        return None, "the runs' test images differ (labels in another order or of another length)"
    for _, row in rows.iterrows():
        p = predictions[str(row["run_id"])]
        acc = float(np.mean(np.equal(p.labels, p.predicted)))
        if abs(acc - float(row[N.TEST_ACC])) > 0.5 / len(p.labels) + 1e-9:
            return None, f"run {row['run_id']}: predictions give {acc:.4f}, test/acc is {row['test/acc']:.4f}"
    return np.stack([np.equal(predictions[r].labels, predictions[r].predicted) for r in runs]), None


def _variance(
    rows: pd.DataFrame, predictions: Mapping[str, RunPredictions], *, arms: list[str], seeds: list[int]
) -> tuple[np.ndarray, np.ndarray | None, int, str | None]:
    """Per-seed accuracies (seeds x arms), the correctness cube (arms x seeds x images) or None with why,
    and the number of test images, for ``arms`` on ``seeds``."""
    rows = rows[rows["strategy"].isin(arms) & rows["seed"].astype(int).isin(seeds)]
    rows = rows.assign(_s=rows["strategy"].map(arms.index)).sort_values(["_s", "seed"])
    n, k = len(arms), len(seeds)
    correct, why = _correctness(rows, predictions)
    acc = rows[N.TEST_ACC].to_numpy(float).reshape(n, k).T
    if correct is None:
        return acc, None, int(pd.to_numeric(rows["n_test"], errors="coerce").min()), why
    cube = correct.reshape(n, k, -1).astype(float)
    return acc, cube, cube.shape[2], None


def _contrast(acc: np.ndarray, cube: np.ndarray | None, i: int, top: int, *, images: int) -> VarianceModel:
    """The variance model of arm ``i`` minus arm ``top``."""
    w = np.zeros(acc.shape[1])
    w[i], w[top] = 1.0, -1.0
    if cube is None:
        return binomial_model(acc, w, images=images)
    return crossed_model(np.tensordot(w, cube, axes=1))


def _versus(
    strategy: str,
    diff: float,
    mean: float,
    m: VarianceModel,
    p_best: float | None,
    seeds: tuple[int, ...] = (),
) -> StrategyComparison:
    low, high = interval(diff, m)
    return StrategyComparison(
        strategy, mean, diff, low, high, p_best, detectable=detectable(m), seeds_needed=seeds_needed(m, diff),
        images_needed=images_needed(m, diff), seeds=seeds,
    )  # fmt: skip


def compare_size(
    rows: pd.DataFrame, predictions: Mapping[str, RunPredictions], *, size: str
) -> SizeComparison | None:
    """Paired comparison of one size's final runs; None when fewer than two strategies pair up.

    When an arm compared alone beats the joint best, the comparison is rebuilt on that arm's seeds (at
    n=5 of the default study lp_ft led by +19.8 pp on 3 seeds, yet the probe was called the best).
    """
    rows = _latest_per_seed(rows)
    tried: set[str] = set()
    anchor: str | None = None
    while True:
        result = _compare_size(rows, predictions, size=size, anchor=anchor)
        if result is None:
            return None
        ahead = [s for s in result.strategies if s.p_best is None and s.seeds and s.diff > 0]
        ahead = [s for s in ahead if s.strategy not in tried]
        if not ahead:
            return result
        anchor = max(ahead, key=lambda s: s.diff).strategy
        tried.add(anchor)


def _compare_size(
    rows: pd.DataFrame, predictions: Mapping[str, RunPredictions], *, size: str, anchor: str | None
) -> SizeComparison | None:
    strategies, seeds, alone, left = _paired_seeds(rows, anchor=anchor)
    if len(strategies) < 2:
        return None
    notes = _pairing_notes(rows[rows["strategy"].isin(strategies + alone)], size)
    acc, cube, images, why = _variance(rows, predictions, arms=strategies, seeds=seeds)
    basis = PER_IMAGE if cube is not None else BINOMIAL
    if cube is None:
        notes.append(f"{size_label(size)}: {why}; the test-set part is approximated as binomial")
    covariance = binomial_covariance(acc, images=images) if cube is None else joint_covariance(cube)
    means = acc.mean(axis=0)
    top = int(np.argmax(means))
    models = {i: _contrast(acc, cube, i, top, images=images) for i in range(len(strategies)) if i != top}
    df = min((m.df() for m in models.values()), default=math.inf)
    p_best = probability_best(means, covariance, df=df)
    out = [
        _versus(s, float(means[i] - means[top]), float(means[i]), models[i], float(p_best[i]))
        if i != top
        else StrategyComparison(s, float(means[i]), 0.0, None, None, float(p_best[i]))
        for i, s in enumerate(strategies)
    ]
    best = strategies[top]
    best_seeds = set(rows[rows["strategy"] == best]["seed"].astype(int))
    for strategy in alone:  # fewer seeds (retired by the race, or a failed seed): paired with the best alone
        shared = sorted(best_seeds & set(rows[rows["strategy"] == strategy]["seed"].astype(int)))
        if len(shared) < 2:
            left.append(f"{strategy} (no 2 seeds in common with {best})")
            continue
        pair_acc, pair_cube, pair_images, pair_why = _variance(
            rows, predictions, arms=[strategy, best], seeds=shared
        )
        if pair_cube is None:
            notes.append(
                f"{size_label(size)}, {strategy}: {pair_why}; the test-set part is approximated as binomial"
            )
        m = _contrast(pair_acc, pair_cube, 0, 1, images=pair_images)
        pair_means = pair_acc.mean(axis=0)
        diff = float(pair_means[0] - pair_means[1])
        out.append(_versus(strategy, diff, float(pair_means[0]), m, None, tuple(shared)))
    order = sorted_strategies(s.strategy for s in out)
    out.sort(key=lambda s: order.index(s.strategy))
    return SizeComparison(size, best, tuple(out), tuple(seeds), images, basis, tuple(left), tuple(notes))


def compare_strategies(
    trials: pd.DataFrame, predictions: Mapping[str, RunPredictions]
) -> list[SizeComparison]:
    """One paired comparison per data size where at least two strategies share two seeds."""
    finals = final_results(trials)
    found = (
        compare_size(finals[finals["n_per_class"] == size], predictions, size=size)
        for size in sorted_sizes(finals["n_per_class"])
    )
    return [c for c in found if c is not None]


COMPARISON_COLUMNS = (
    "n_per_class", "strategy", "paired_best", "paired_mean", "paired_diff", "paired_diff_low",
    "paired_diff_high", "p_best", "paired_seeds", "paired_test_images", "paired_basis", "detectable_diff",
)  # fmt: skip


def comparison_table(comparisons: list[SizeComparison]) -> pd.DataFrame:
    """One row per compared strategy and size (results.csv columns, LaTeX, parent-run metrics)."""

    def nan(x: float | None) -> float:
        return math.nan if x is None else x

    rows = [
        (c.n_per_class, s.strategy, c.best, s.mean, s.diff, nan(s.low), nan(s.high), nan(s.p_best),
         " ".join(map(str, c.seeds_of(s))), c.images, c.basis, nan(s.detectable))
        for c in comparisons
        for s in c.strategies
    ]  # in COMPARISON_COLUMNS order  # fmt: skip
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def with_comparisons(
    frame: pd.DataFrame, comparisons: list[SizeComparison], *, finals_only: bool
) -> pd.DataFrame:
    """``frame`` (trials or summary) with the comparison columns of its strategy and size.

    For trials (``finals_only``), only completed final runs get values: the numbers are about them.
    """
    table = comparison_table(comparisons)
    merged = frame.merge(table, on=["n_per_class", "strategy"], how="left")
    if finals_only:
        mask = (merged[N.ROLE] == N.FINAL) & (merged["outcome"] == "completed")
        merged.loc[~mask, list(COMPARISON_COLUMNS[2:])] = pd.NA
    merged.index = frame.index
    return merged


# --- the rule, its words, and the recommended arm's configuration ---------------------------------------


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
    frontier: tuple[Choice, ...]  # the Pareto frontier, cheapest first
    comparison: SizeComparison | None = None  # the paired comparison the rule used, when there is one

    @property
    def gap(self) -> float:
        """Accuracy given up by taking the recommendation instead of the best (>= 0)."""
        return self.best.acc - self.recommended.acc

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
    return (_finite(choice.cost), -choice.acc)


def not_credibly_worse(s: StrategyComparison, *, tolerance: float) -> bool:
    """The best itself, a strategy that cannot be told from it (interval includes 0), or one whose mean
    difference is within ``tolerance``."""
    return s.high is None or s.high >= 0 or s.diff >= -tolerance - 1e-12


def recommend(
    summary: pd.DataFrame, *, tolerance: float, comparisons: list[SizeComparison] | None = None
) -> list[Recommendation]:
    """One recommendation per data size that has at least one completed final run (``tolerance`` is
    checked by the entry points: :func:`tlbench.report.build.analyse` and the CLI)."""
    paired = {c.n_per_class: c for c in comparisons or []}
    out = []
    for size, at_size in groups(summary, "n_per_class"):
        rows = at_size.sort_values(["train_flops"], na_position="last")
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
        front = tuple(choices[i] for i in pareto_front([c.cost for c in choices], [c.acc for c in choices]))
        compared = tuple(c.strategy for c in choices)
        out.append(Recommendation(size, recommended, best, cheapest, compared, front, comparison))
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
        if b.acc_ci is not None and r.acc_ci is not None and rec.gap <= b.acc_ci + r.acc_ci:
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
    if len(rec.frontier) < 2:
        return f"{size_label(rec.n_per_class)}: one strategy is on the frontier; no trade-off to buy."
    steps = "; ".join(
        f"{a.strategy} → {b.strategy}: {_rate(b.acc - a.acc, b.cost - a.cost, unit)}"
        for a, b in itertools.pairwise(rec.frontier)
    )
    return f"{size_label(rec.n_per_class)}: {steps}."


def _interval(low: float | None, high: float | None) -> str:
    return f"95% interval {signed_pp(low).removesuffix(' pp')} to {signed_pp(high)}"


def _versus_text(s: StrategyComparison, best: str) -> str:
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
    needed = ((s.seeds_needed, "seeds"), (s.images_needed, "test images"))
    options = [f"about {n} {what}" for n, what in needed if n is not None]
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
        text += f" {pair} ({_versus_text(rs, b.strategy)}); {_cost_ratio(r, b)}."
        if same:
            text += _resolution(rs, comparison, b.strategy)
    worse = [s for s in others if not_credibly_worse(s, tolerance=tolerance) is False]
    if worse:
        items = "; ".join(f"{s.strategy} ({_versus_text(s, b.strategy)})" for s in worse)
        text += f" Credibly worse than {b.strategy}: {items}."
    joint = [(s.strategy, s.p_best) for s in comparison.strategies if s.p_best is not None]
    chances = ", ".join(f"{name} {p:.0%}" for name, p in sorted(joint, key=lambda item: -item[1]))
    text += f" P(best): {chances}."
    if alone := [f"{s.strategy} ({len(s.seeds)} seeds)" for s in comparison.strategies if s.p_best is None]:
        text += f" Compared with the best on fewer seeds (no P(best)): {', '.join(alone)}."
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
    """The arm the report recommends at one data size (or the one asked for) and its configuration:
    ``params`` every final run logged alike (per-seed ones left out), ``config_yaml`` the resolved
    configuration of final run ``config_run_id``, for retraining it."""

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
    overrides: tuple[str, ...] | None  # the finals' Hydra overrides minus the seed, when logged
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


def _overrides(finals: pd.DataFrame) -> tuple[str, ...] | None:
    """The finals' Hydra overrides (tag/param ``overrides``, a JSON list) without the seed."""
    if OVERRIDES not in finals:
        return None
    lists: set[tuple[str, ...]] = set()
    for text in {str(v) for v in finals[OVERRIDES] if not pd.isna(v)}:
        try:
            value = json.loads(text)
        except ValueError:
            return None
        if not isinstance(value, list):
            return None
        lists.add(tuple(str(o) for o in value if not str(o).startswith("seed=")))
    return lists.pop() if len(lists) == 1 else None


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
        gap = f" (paired difference {signed_pp(versus.diff)}, {_interval(versus.low, versus.high)})"
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
    chosen_size = sorted_sizes(by_size)[-1] if size is None else size
    if chosen_size not in by_size:
        raise ConfigError(
            f"study '{study}' has no completed final runs at data size '{size}'; sizes with final runs: "
            f"{', '.join(sorted_sizes(by_size))}"
        )
    rec = by_size[chosen_size]
    rows = summary[summary["n_per_class"] == chosen_size]
    arm = rec.recommended.strategy if strategy is None else _pick_arm(study, rows, chosen_size, strategy)
    choice = _choice(rows[rows["strategy"] == arm].iloc[0])
    finals = final_results(trials)
    finals = finals[(finals["n_per_class"] == chosen_size) & (finals["strategy"] == arm)]
    cells = finals[N.CELL].astype("string").fillna("")
    by_cell = finals.assign(_cell=cells).groupby("_cell", sort=True)
    # an arm that pools cells (a factor the report does not separate): the cell best on validation
    cell = max(by_cell.groups, key=lambda c: (by_cell.get_group(c)[N.VAL_ACC].astype(float).mean(), str(c)))
    mine = finals[cells == cell].sort_values("seed")
    tuned = {str(v) for v in mine[N.TUNED_FROM].dropna()}
    tuned_from = _int_or_none(tuned.pop()) if len(tuned) == 1 else None
    tune_run = trials[
        (trials[N.ROLE] == N.TUNE) & (trials[N.CELL].astype("string") == cell)
        & (pd.to_numeric(trials[N.TRIAL_NUMBER], errors="coerce") == tuned_from)
    ]  # fmt: skip
    optuna = {str(v) for v in mine[N.OPTUNA_STUDY].dropna()}
    runs = tuple(
        FinalRun(
            run_id=str(row["run_id"]),
            seed=int(row["seed"]),
            optuna_trial=_int_or_none(row[N.TRIAL_NUMBER]),
            test_acc=float(row[N.TEST_ACC]),
            val_acc=None if pd.isna(row[N.VAL_ACC]) else float(row[N.VAL_ACC]),
            steps=_int_or_none(row.get(TRAIN_STEPS)),  # None: an older study, or a column absent
        )
        for _, row in mine.iterrows()
    )
    plain = str(mine["strategy_name"].iloc[0]) if "strategy_name" in mine else arm
    values = {c: {str(v) for v in mine[c] if not pd.isna(v) and str(v) != ""} for c in PARAM_COLUMNS}
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
        params={c: v.pop() for c, v in values.items() if len(v) == 1 and c not in _PER_SEED_PARAMS},
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


# Learning curves and what more labels would buy: a saturating fit of test accuracy against labelled
# images per class, per arm and seed; predictions at 2x and 4x the largest size, and whether the
# recommendation (the paired rule above) would change there; arms whose accuracy falls as data grows.

EXPONENT_RANGE = (0.05, 2.0)
STARTS = (0.1, 0.5, 1.5)  # starting exponents: the lowest squared error of the three fits wins
TWO_SIZE_EXPONENT = 0.5
_AT_BOUND = 1e-9  # a parameter this close to its bound is on it (the solver stays strictly inside)


@dataclass(frozen=True)
class Curve:
    plateau: float  # a
    scale: float  # b
    exponent: float  # c

    def predict(self, n: Any) -> Any:  # a float, or an array of them
        return self.plateau - self.scale * n**-self.exponent


def _fit(
    x: np.ndarray, y: np.ndarray, *, plateau: float | None, exponent: float | None
) -> tuple[Curve, float]:
    """Least squares over the parameters not fixed, within their bounds; (curve, squared error)."""
    free = [name for name, fixed in (("a", plateau), ("b", None), ("c", exponent)) if fixed is None]
    low = {"a": -np.inf, "b": 0.0, "c": EXPONENT_RANGE[0]}
    high = {"a": 1.0, "b": np.inf, "c": EXPONENT_RANGE[1]}

    def curve(params: Sequence[float]) -> Curve:
        given = dict(zip(free, params, strict=True))
        return Curve(given.get("a", plateau or 0.0), given["b"], given.get("c", exponent or 0.0))

    def model(n: np.ndarray, *params: float) -> np.ndarray:
        return np.asarray(curve(params).predict(n))

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
        fitted = curve([float(v) for v in params])
        if fitted.scale <= _AT_BOUND:  # falling or flat with more data is noise: the flat least-squares line
            fitted = Curve(float(y.mean()) if plateau is None else plateau, 0.0, fitted.exponent)
        error = float(np.sum((y - fitted.predict(x)) ** 2))
        if best is None or error < best[1]:
            best = (fitted, error)
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


def strategy_curves(trials: pd.DataFrame, targets: Sequence[float]) -> list[StrategyCurve]:
    """Per strategy with >= 2 sizes: the seeds' curves and their predictions at ``targets``."""
    finals = final_results(trials)
    out = []
    for strategy, rows in groups(finals, "strategy"):
        sizes = per_class_sizes(rows)
        data = rows.assign(_n=sizes).dropna(subset=["_n", "seed"])
        data = data[np.isfinite(data["_n"])]
        fits = [
            (int(seed), fit_curve(group["_n"].tolist(), group[N.TEST_ACC].astype(float).tolist()))
            for seed, group in data.groupby("seed")
            if group["_n"].nunique() >= 2
        ]  # one curve per seed
        if not fits:
            continue
        out.append(
            StrategyCurve(
                strategy,
                tuple(sorted(set(sizes.dropna().tolist()))),
                tuple(s for s, _ in fits),
                tuple(c for _, c in fits),
                tuple(mean_ci([c.predict(t) for _, c in fits]) for t in targets),
            )
        )
    return out


def falling_curves(summary: pd.DataFrame, *, drop: float = 0.01) -> list[str]:
    """A sentence per consecutive sizes (in summary order) where an arm's mean test accuracy falls by more
    than ``drop``: more data should not hurt."""
    out = []
    for strategy, rows in groups(summary, "strategy"):
        means = [(str(r["n_per_class"]), float(r["acc_mean"])) for _, r in rows.iterrows()]
        out += [
            f"**{strategy}** falls as data grows: {pct(acc_a)} at {size_label(a)} → {pct(acc_b)} at "
            f"{size_label(b)}. More labelled images should not hurt; a step budget that does not grow with "
            "the data or settings tuned at another size are the usual causes. Its fitted curve is flat, so "
            "its predictions say nothing about more labels."
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
    targets: tuple[float, ...]  # FACTORS x its training images per class
    curves: tuple[StrategyCurve, ...]
    current: str | None  # recommended at the largest size
    predicted_best: str  # highest predicted mean at 2x
    recommended: str  # the same rule applied to the 2x predictions
    lead: Estimate | None  # predicted_best minus current at 2x, over the seeds' curves


def _diff_at(a: StrategyCurve, b: StrategyCurve, target: float) -> Estimate | None:
    """a minus b predicted at ``target``, paired by seed."""
    seeds = sorted(set(a.seeds) & set(b.seeds))
    if not seeds:
        return None
    ca, cb = dict(zip(a.seeds, a.curves, strict=True)), dict(zip(b.seeds, b.curves, strict=True))
    return mean_ci([ca[s].predict(target) - cb[s].predict(target) for s in seeds])


def outlook(
    trials: pd.DataFrame, summary: pd.DataFrame, recommendations: list[Recommendation], *, tolerance: float
) -> Outlook | None:
    """None when fewer than two sizes or two strategies can be fitted."""
    finals = final_results(trials)
    if finals.empty:
        return None
    largest = sorted_sizes(finals["n_per_class"])[-1]
    at_largest = finals[finals["n_per_class"] == largest]
    largest_n = float(per_class_sizes(at_largest).mean())
    if not math.isfinite(largest_n):
        largest_n = size_key(largest)
    targets = tuple(f * largest_n for f in FACTORS)
    curves = tuple(strategy_curves(trials, targets))
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
        diff = _diff_at(curve, best, targets[0]) if curve is not best else None
        if curve is best or diff is None or (diff.high if diff.high is not None else diff.mean) > -tolerance:
            eligible.append(curve)
    chosen = min(eligible, key=lambda c: (_finite(cost.get(c.strategy)), -c.predictions[0].mean))
    current = next((r.recommended.strategy for r in recommendations if r.n_per_class == largest), None)
    lead = None
    if current in by_name and current != best.strategy:
        lead = _diff_at(best, by_name[current], targets[0])
    return Outlook(largest, targets, curves, current, best.strategy, chosen.strategy, lead)


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
