"""The fair protocol over stored trials: what counts toward a budget, which claim wins, who is best.

Pure functions of Optuna's frozen trials, so every worker (on any machine) reaches the same answer
from the same storage. A trial *counts* when it is COMPLETE, PRUNED (compute spent is compute spent)
or FAILed for a reason that is a property of its configuration (divergence, out of memory, an
impossible setting). Trials whose process died, that were interrupted, or that lost a concurrent
claim do not count: their cell gets the work redone. Crashes are redone at most ``max_retries``
times per cell (or final slot), so a cell that always crashes cannot loop forever.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

# user attrs written on every trial
FAIL_KIND, FAIL_REASON = "fail_kind", "fail_reason"
ROLE, CELL, SLOT, SEED, STRATEGY = "role", "cell", "slot", "seed", "strategy"
TUNED_FROM, RUN_ID, STATUS = "tuned_from_trial", "mlflow_run_id", "status"

# why a trial failed (FAIL_KIND): "config" (diverged, out of memory, an impossible setting) and
# "collapsed" (trained, but its result is degenerate: at chance, or a loss that ended above its start)
# are properties of the configuration and count toward the budget; neither is ever selected
CONFIG, COLLAPSED = "config", "collapsed"
COUNTED_KINDS = frozenset({CONFIG, COLLAPSED})
RETRY_KINDS = frozenset({"error", "died"})  # bounded by max_retries
# "interrupted", "over_budget", "duplicate": neither counted nor limited

Alive = Callable[[FrozenTrial], bool]


def fail_kind(trial: FrozenTrial) -> str | None:
    return str(trial.user_attrs.get(FAIL_KIND)) if trial.state == TrialState.FAIL else None


def is_counted(trial: FrozenTrial) -> bool:
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and fail_kind(trial) in COUNTED_KINDS


def occupies(trial: FrozenTrial) -> bool:
    """Counted, or may still become counted (running, or enqueued and waiting to be picked up)."""
    return is_counted(trial) or trial.state in (TrialState.RUNNING, TrialState.WAITING)


@dataclass(frozen=True)
class CellStatus:
    budget: int
    counted: int
    running: int  # live RUNNING trials (dead ones are reaped before this is read)
    retries: int  # crashes so far
    max_retries: int

    @property
    def given_up(self) -> bool:
        return self.retries > self.max_retries and self.counted < self.budget

    @property
    def needed(self) -> int:
        return 0 if self.given_up else max(0, self.budget - self.counted - self.running)

    @property
    def done(self) -> bool:
        return self.running == 0 and (self.counted >= self.budget or self.given_up)


def cell_status(trials: Sequence[FrozenTrial], *, budget: int, max_retries: int, alive: Alive) -> CellStatus:
    return CellStatus(
        budget=budget,
        counted=sum(1 for t in trials if is_counted(t)),
        running=sum(1 for t in trials if t.state == TrialState.RUNNING and alive(t)),
        retries=sum(1 for t in trials if fail_kind(t) in RETRY_KINDS),
        max_retries=max_retries,
    )


def claim_within_budget(trials: Sequence[FrozenTrial], number: int, budget: int) -> bool:
    """Optimistic claim: trial ``number`` runs iff fewer than ``budget`` counted-or-running trials precede it.

    Trial numbers are assigned atomically by the storage, so concurrent workers agree on the order;
    a RUNNING trial of a dead worker still counts here (conservative: never overshoot the budget).
    """
    ahead = [t for t in trials if t.number < number and (is_counted(t) or t.state == TrialState.RUNNING)]
    return len(ahead) < budget


UNTUNED = -1  # tuned_from_trial of finals in a sweep without tuning (budget.trials_per_cell: 0)


def best_trial(trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    """Highest validation accuracy among COMPLETE trials; ties go to the earlier trial."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        return None
    return min(complete, key=lambda t: (-float(t.value or 0.0), t.number))


@dataclass(frozen=True)
class Slot:
    """One enqueued piece of work of a cell: a final run on one seed, one budget check, one Pareto trial.

    Its key (``<cell>|seed=3``) is stored on the trial; the first trial to claim a key runs it.
    """

    cell_key: str
    label: str  # "seed=3" | "budget_x2" | "trial=1"

    @property
    def key(self) -> str:
        return f"{self.cell_key}|{self.label}"


def final_slot(cell_key: str, seed: int) -> Slot:
    """A cell's best configuration on one final seed (key ``<cell>|seed=<seed>``, as stored since issue 5)."""
    return Slot(cell_key, f"seed={seed}")


def slot_trials(trials: Sequence[FrozenTrial], slot: Slot) -> list[FrozenTrial]:
    return [t for t in trials if t.user_attrs.get(SLOT) == slot.key]


def slot_needs_trial(trials: Sequence[FrozenTrial], slot: Slot, *, max_retries: int) -> bool:
    """Nothing covers the slot (no counted, running or waiting trial) and it has retries left."""
    mine = slot_trials(trials, slot)
    retries = sum(1 for t in mine if fail_kind(t) in RETRY_KINDS)
    return not any(occupies(t) for t in mine) and retries <= max_retries


def slot_given_up(trials: Sequence[FrozenTrial], slot: Slot, *, max_retries: int) -> bool:
    mine = slot_trials(trials, slot)
    retries = sum(1 for t in mine if fail_kind(t) in RETRY_KINDS)
    return not any(occupies(t) for t in mine) and retries > max_retries


def first_claim(trials: Sequence[FrozenTrial], trial: FrozenTrial) -> bool:
    """A popped final trial runs iff no earlier trial of its slot occupies it (duplicates lose)."""
    slot = trial.user_attrs.get(SLOT)
    return not any(t.number < trial.number and t.user_attrs.get(SLOT) == slot and occupies(t) for t in trials)
