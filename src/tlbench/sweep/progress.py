"""What the live view shows, computed (not drawn) from the stored trials: counts, best, ETA.

Kept apart from the drawing (:mod:`tlbench.sweep.view`) so it is a pure function tests can check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from tlbench.sweep import protocol as P
from tlbench.sweep.cells import expand_cells, tuning_budget
from tlbench.sweep.spec import SweepSpec
from tlbench.sweep.storage import StudyNames

NOT_RUN = frozenset({"over_budget", "duplicate"})  # lost claims: never trained, not shown


@dataclass(frozen=True)
class PhaseCounts:
    name: str  # tune | final | pareto
    planned: int
    complete: int = 0
    pruned: int = 0
    failed: int = 0  # counted failures (diverged, collapsed, impossible configuration)
    collapsed: int = 0  # of those, trained but degenerate (at chance): a failed configuration
    redone: int = 0  # failures that are redone: worker died, crashed, interrupted
    running: int = 0
    mean_s: float | None = None  # mean duration of its finished trials

    @property
    def remaining(self) -> int:
        return max(0, self.planned - self.complete - self.pruned - self.failed)


@dataclass(frozen=True)
class ProgressInfo:
    phases: tuple[PhaseCounts, ...]
    best: dict[str, float]  # strategy -> best tuning val/acc so far
    elapsed_s: float
    eta_s: float | None

    @property
    def remaining(self) -> int:
        return sum(p.remaining for p in self.phases)


def planned_trials(spec: SweepSpec, *, budget_checks: int = 0) -> dict[str, int]:
    """Trials per phase; ``budget_checks``: how many arms get a budget check (from the study's plan)."""
    cells = expand_cells(spec)
    if spec.mode == "pareto":
        return {"pareto": len(cells) * spec.budget.trials_per_cell}
    planned = {"tune": sum(tuning_budget(spec, cell) for cell in cells)}
    if budget_checks:
        planned["check"] = budget_checks
    if spec.has_finals:
        planned["final"] = len(cells) * len(spec.final_seeds)
    return planned


def trial_seconds(trial: FrozenTrial) -> float | None:
    """Wall seconds from claim to result (None while a trial runs or if it never started)."""
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def phase_counts(name: str, planned: int, trials: Sequence[FrozenTrial]) -> PhaseCounts:
    ran = [t for t in trials if P.fail_kind(t) not in NOT_RUN]
    durations = [d for t in ran if P.is_counted(t) and (d := trial_seconds(t)) is not None]
    waiting = sum(1 for t in ran if t.state == TrialState.WAITING)
    return PhaseCounts(
        name=name,
        planned=max(
            planned, sum(1 for t in ran if P.is_counted(t) or t.state == TrialState.RUNNING) + waiting
        ),
        complete=sum(1 for t in ran if t.state == TrialState.COMPLETE),
        pruned=sum(1 for t in ran if t.state == TrialState.PRUNED),
        failed=sum(1 for t in ran if t.state == TrialState.FAIL and P.is_counted(t)),
        collapsed=sum(1 for t in ran if P.fail_kind(t) == P.COLLAPSED),
        redone=sum(1 for t in ran if t.state == TrialState.FAIL and not P.is_counted(t)),
        running=sum(1 for t in ran if t.state == TrialState.RUNNING),
        mean_s=sum(durations) / len(durations) if durations else None,
    )


def progress_info(
    trials_by_phase: Mapping[str, Sequence[FrozenTrial]],
    planned: Mapping[str, int],
    *,
    elapsed_s: float,
    workers: int = 1,
) -> ProgressInfo:
    """Counts per phase, best tuning val/acc per strategy, ETA = remaining x mean duration / workers."""
    phases = tuple(phase_counts(name, planned[name], trials_by_phase.get(name, ())) for name in planned)
    best: dict[str, float] = {}
    for phase in ("tune", "pareto"):
        for t in trials_by_phase.get(phase, ()):
            if t.state == TrialState.COMPLETE and t.values:
                strategy = str(t.user_attrs.get(P.STRATEGY, "?"))
                best[strategy] = max(best.get(strategy, 0.0), float(t.values[0]))
    known = [p.mean_s for p in phases if p.mean_s is not None]
    eta = None
    if known:
        fallback = sum(known) / len(known)
        seconds = sum(p.remaining * (p.mean_s if p.mean_s is not None else fallback) for p in phases)
        eta = seconds / max(1, workers)
    return ProgressInfo(phases=phases, best=dict(sorted(best.items())), elapsed_s=elapsed_s, eta_s=eta)


def read_trials(
    storage: optuna.storages.BaseStorage, spec: SweepSpec, names: StudyNames
) -> dict[str, list[FrozenTrial]]:
    """All trials of the study, grouped by phase; studies not created yet count as empty."""
    if spec.mode == "pareto":
        wanted = {names.pareto: "pareto"}
    else:
        wanted = {names.cell(c.key): "tune" for c in expand_cells(spec)}
        wanted[names.budget_check] = "check"
        wanted[names.final] = "final"
    grouped: dict[str, list[FrozenTrial]] = {}
    for study_name, phase in wanted.items():
        try:
            study_id = storage.get_study_id_from_name(study_name)
        except KeyError:
            continue
        grouped.setdefault(phase, []).extend(storage.get_all_trials(study_id, deepcopy=False))
    return grouped


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
