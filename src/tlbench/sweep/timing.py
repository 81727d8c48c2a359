"""Where a sweep's time went: trial wall time and fit time, per phase and strategy, and the rest.

Trial wall time runs from the claim to the ``tell`` (composition, data, model, fit, evaluation,
tracking); fit time is the trial's ``cost/fit_seconds``. Whatever the sweep's wall time exceeds
their sum is start-up and coordination.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from optuna.trial import FrozenTrial

from tlbench.sweep import protocol as P
from tlbench.sweep.progress import NOT_RUN, trial_seconds


@dataclass(frozen=True)
class TimeRow:
    phase: str
    strategy: str
    trials: int
    wall_s: float
    fit_s: float


def time_breakdown(trials_by_phase: Mapping[str, Sequence[FrozenTrial]]) -> list[TimeRow]:
    rows: dict[tuple[str, str], list[float]] = {}
    for phase, trials in trials_by_phase.items():
        for t in trials:
            if t.datetime_complete is None or P.fail_kind(t) in NOT_RUN:
                continue
            key = (phase, str(t.user_attrs.get(P.STRATEGY, "?")))
            acc = rows.setdefault(key, [0, 0.0, 0.0])
            acc[0] += 1
            acc[1] += trial_seconds(t) or 0.0
            acc[2] += float(t.user_attrs.get("cost_fit_seconds", 0.0))
    return [TimeRow(p, s, int(n), wall, fit) for (p, s), (n, wall, fit) in sorted(rows.items())]


def format_breakdown(rows: Sequence[TimeRow], *, total_s: float | None = None) -> str:
    lines = ["where the time went (trial wall = claim to result; fit = training incl. validation):"]
    lines.append(f"  {'phase':<7} {'strategy':<14} {'trials':>6} {'trial wall s':>12} {'fit s':>8}")
    for r in rows:
        lines.append(f"  {r.phase:<7} {r.strategy:<14} {r.trials:>6} {r.wall_s:>12.1f} {r.fit_s:>8.1f}")
    wall, fit = sum(r.wall_s for r in rows), sum(r.fit_s for r in rows)
    lines.append(f"  {'all':<22} {sum(r.trials for r in rows):>6} {wall:>12.1f} {fit:>8.1f}")
    if total_s is not None:
        lines.append(f"  this command's wall time {total_s:.1f} s (start-up and coordination: the rest)")
    return "\n".join(lines)
