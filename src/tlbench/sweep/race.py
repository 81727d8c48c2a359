"""Racing finals: seeds run in rounds, paired across the arms of a data size, and spent where the
verdict is undecided (issue 19); the rule is :data:`RULE`.

Each seed trains both arms of a pair on the same training subset, so the seed's luck cancels in their
paired difference. A pair whose better arm costs more is decided (both stay on the accuracy/cost
front). Two arms whose validation accuracy does not vary with the seed (a converged probe on the whole
pool, ``as_is``) cannot be told apart by more seeds: their pair is decided without a retirement.
Only validation accuracy and cost are read, all from the Optuna storage, so every worker, on any
machine, and a resumed sweep compute the same race.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scipy import stats

from tlbench.sweep.spec import Race, Scalar, format_value

COST_TOLERANCE = 0.10  # "costs no more": at most 10 % above (device-hours of identical work vary that much)
CONFIDENCE = 0.95
RULE = (
    "after each round, an arm is retired when another arm of its data size is better on validation "
    f"accuracy by a paired t {CONFIDENCE:.0%} interval over their common seeds that excludes 0 and costs "
    f"no more (mean standalone device-hours at most {COST_TOLERANCE:.0%} above); arms in an undecided "
    "pair get more seeds, the same for each, up to the cap; test accuracy is never read"
)
RACING, DECIDED, AT_CAP = "racing", "decided", "still undecided at the cap"


def race_seeds(final_seeds: Sequence[int], race: Race | None, *, tune_seed: int) -> list[list[int]]:
    """The seeds of each round: ``final.seeds``, then ``race.round`` new ones per round up to the cap.

    New seeds continue after the largest final seed, skipping the tuning seed (a final run must be
    independent of the runs that chose its configuration).
    """
    rounds = [list(final_seeds)]
    if race is None:
        return rounds
    fresh = (s for s in itertools.count(max(final_seeds) + 1) if s != tune_seed)
    extra = list(itertools.islice(fresh, max(0, race.cap - len(final_seeds))))
    rounds += [extra[i : i + race.round] for i in range(0, len(extra), race.round)]
    return rounds


@dataclass(frozen=True)
class Outcome:
    """One (arm, seed) final run as the race sees it: done or not, and its validation accuracy and cost."""

    done: bool  # counted (completed or failed) or given up: nothing more will run for this seed
    val_acc: float | None = None  # None unless it completed
    cost: float | None = None  # standalone device-hours (or device-hours)


@dataclass(frozen=True)
class Arm:
    cell: str
    strategy: str
    size: Scalar  # the data size (data.n_per_class) whose arms it races against
    factors: dict[str, Scalar]  # its other factor values (backbone, freeze depth, ...)

    @property
    def label(self) -> str:
        """The strategy, with the other factors that tell arms apart (``full_finetune backbone=lite1``)."""
        others = [
            f"{k.rsplit('.', 1)[-1]}={format_value(v)}" for k, v in self.factors.items() if k != "strategy"
        ]
        return " ".join([self.strategy, *others])


@dataclass
class ArmRace:
    arm: Arm
    seeds: list[int] = field(default_factory=list)  # seeds assigned so far (run or due)
    retired_round: int | None = None
    reason: str = RACING


@dataclass(frozen=True)
class Comparison:
    """``a`` minus ``b`` in validation accuracy over their common completed seeds."""

    mean: float
    low: float
    high: float
    constant: bool  # neither arm's accuracy varies with the seed: more seeds cannot tell them apart

    @property
    def credible(self) -> bool:
        return self.low > 0 or self.high < 0

    def flipped(self) -> Comparison:
        """``b`` minus ``a``."""
        return Comparison(-self.mean, -self.high, -self.low, self.constant)

    def text(self) -> str:
        return (
            f"{100 * self.mean:+.1f} pp, {CONFIDENCE:.0%} CI {100 * self.low:+.1f} to {100 * self.high:+.1f}"
        )


def compare(a: Mapping[int, float], b: Mapping[int, float]) -> Comparison | None:
    """Paired t interval of ``a - b`` over common seeds; ``None`` with fewer than 2 common seeds."""
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        return None
    diffs = [a[s] - b[s] for s in common]
    mean = statistics.fmean(diffs)
    constant = len({a[s] for s in common}) == 1 and len({b[s] for s in common}) == 1
    sd = statistics.stdev(diffs)
    if sd == 0:
        # The same difference on every seed (often one validation image: 2.0 pp of 49): the seeds give no
        # estimate of their spread, and the t interval would have zero width and call it credible. No
        # interval, then: undecided (more seeds), or decided without a retirement if nothing varies.
        return Comparison(mean, -math.inf, math.inf, constant)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(common) - 1)) * sd / math.sqrt(len(common))
    return Comparison(mean, mean - half, mean + half, constant)


def _mean_cost(outcomes: Mapping[int, Outcome]) -> float | None:
    costs = [o.cost for o in outcomes.values() if o.cost is not None]
    return statistics.fmean(costs) if costs else None


def _costs_no_more(cheaper: float | None, other: float | None) -> bool:
    if cheaper is None or other is None:
        return False  # unknown cost: never a reason to retire
    return cheaper <= other * (1 + COST_TOLERANCE)


def _decide(
    racing: list[ArmRace], results: Mapping[str, Mapping[int, Outcome]], round_number: int
) -> set[str]:
    """Retire credibly dominated arms; returns the cells in an undecided pair (they need more seeds)."""
    # Only the seeds of the rounds played so far: a replay after later rounds ran (the end of the
    # sweep, a resumed one, another worker) must take each round's decision on that round's evidence.
    played = {
        r.arm.cell: {s: o for s, o in results.get(r.arm.cell, {}).items() if s in r.seeds} for r in racing
    }
    vals = {
        cell: {seed: o.val_acc for seed, o in outcomes.items() if o.val_acc is not None}
        for cell, outcomes in played.items()
    }
    costs = {cell: _mean_cost(outcomes) for cell, outcomes in played.items()}
    retire: dict[str, str] = {}
    for x, y in itertools.combinations(racing, 2):
        cmp = compare(vals[x.arm.cell], vals[y.arm.cell])
        if cmp is None or not cmp.credible or cmp.constant:
            continue  # constant: no seed evidence either way (it is all validation-set sampling)
        better, worse, shown = (x, y, cmp) if cmp.mean > 0 else (y, x, cmp.flipped())
        if _costs_no_more(costs[better.arm.cell], costs[worse.arm.cell]):
            reason = f"credibly worse on validation than {better.arm.label} ({shown.text()}) at no lower cost"
            retire.setdefault(worse.arm.cell, reason)
    for r in racing:
        if r.arm.cell in retire:
            r.retired_round, r.reason = round_number, retire[r.arm.cell]
        elif len(vals[r.arm.cell]) < 2:
            r.reason = "fewer than 2 completed seeds: not compared"
    still = sorted(r.arm.cell for r in racing if r.reason == RACING)
    return {
        cell
        for x, y in itertools.combinations(still, 2)
        if _undecided_pair(vals[x], vals[y])
        for cell in (x, y)
    }


def _undecided_pair(a: Mapping[int, float], b: Mapping[int, float]) -> bool:
    """Neither credibly better, and more seeds could still tell them apart."""
    cmp = compare(a, b)
    return cmp is not None and not cmp.credible and not cmp.constant


def run_race(
    arms: Sequence[Arm],
    results: Mapping[str, Mapping[int, Outcome]],
    rounds: Sequence[Sequence[int]],
) -> tuple[list[ArmRace], int]:
    """The race of one data size, replayed from its results: each arm's seeds and fate, and the round
    reached. ``results``: cell -> seed -> outcome (missing: not run yet). Rounds that are not done yet
    leave their arms ``racing``."""
    state = [ArmRace(arm) for arm in arms]
    racing = list(state)
    for number, seeds in enumerate(rounds, start=1):
        for r in racing:
            r.seeds += [s for s in seeds if s not in r.seeds]
        pending = Outcome(done=False)
        if not all(results.get(r.arm.cell, {}).get(s, pending).done for r in racing for s in r.seeds):
            return state, number  # this round is still running
        needs_more = _decide(racing, results, number)
        for r in racing:
            if r.retired_round is None and r.reason == RACING:
                r.reason = DECIDED if r.arm.cell not in needs_more else RACING
        racing = [r for r in racing if r.reason == RACING]
        if not racing:
            return state, number
    for r in racing:
        r.reason = AT_CAP
    return state, len(rounds)


def race_document(groups: Sequence[tuple[list[ArmRace], int]], *, race: Race) -> dict[str, object]:
    """``race.json`` (names.RACE_ARTIFACT, on the study's parent run) as the report reads it."""
    return {
        "rule": RULE,
        "cap": race.cap,
        "rounds": max((n for _, n in groups), default=0),
        "arms": [
            {
                "cell": r.arm.cell,
                "strategy": r.arm.strategy,
                "n_per_class": "all" if r.arm.size is None else format_value(r.arm.size),
                "factors": r.arm.factors,
                "seeds": r.seeds,
                "retired_round": r.retired_round,
                "reason": r.reason,
            }
            for state, _ in groups
            for r in state
        ],
    }
