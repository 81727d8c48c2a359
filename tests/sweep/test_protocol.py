"""The fair protocol as pure functions of stored trials: counting, claims, best trial, final slots."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState, create_trial

from tlbench.sweep import protocol as P
from tlbench.sweep.samplers import make_pruner
from tlbench.sweep.spec import PrunerSpec


def _trial(number: int, state: TrialState, value: float | None = None, **attrs: Any) -> FrozenTrial:
    trial = create_trial(state=state, value=value if state == TrialState.COMPLETE else None, user_attrs=attrs)
    trial.number = number
    return trial


def _fail(number: int, kind: str) -> FrozenTrial:
    return _trial(number, TrialState.FAIL, **{P.FAIL_KIND: kind})


@pytest.mark.parametrize(
    ("trial", "counted"),
    [
        (_trial(0, TrialState.COMPLETE, 0.5), True),
        (_trial(0, TrialState.PRUNED), True),  # compute spent is compute spent
        (_fail(0, "config"), True),  # diverged: a property of the configuration
        (_fail(0, "died"), False),  # redone
        (_fail(0, "error"), False),  # redone, a bounded number of times
        (_fail(0, "interrupted"), False),
        (_fail(0, "over_budget"), False),
        (_trial(0, TrialState.RUNNING), False),
    ],
)
def test_what_counts_toward_a_budget(trial: FrozenTrial, counted: bool) -> None:
    # only finished work that says something about the configuration counts
    assert P.is_counted(trial) is counted


def test_optimistic_claims_never_overshoot_the_budget() -> None:
    # budget 2: the two lowest-numbered live-or-counted trials win; a third concurrent claim loses
    trials = [
        _trial(0, TrialState.COMPLETE, 0.1),
        _fail(1, "died"),
        _trial(2, TrialState.RUNNING),
        _trial(3, TrialState.RUNNING),
    ]
    assert P.claim_within_budget(trials, 2, budget=2)
    assert not P.claim_within_budget(trials, 3, budget=2)


def test_cell_status_redoes_dead_work_and_gives_up_on_crash_loops() -> None:
    # a died trial is redone; more crashes than max_retries and the cell is given up
    alive = lambda t: True  # noqa: E731
    status = P.cell_status(
        [_trial(0, TrialState.COMPLETE, 0.3), _fail(1, "died")], budget=2, max_retries=2, alive=alive
    )
    assert (status.counted, status.needed, status.done) == (1, 1, False)
    crashes = [_fail(i, "error") for i in range(3)]
    status = P.cell_status(crashes, budget=2, max_retries=2, alive=alive)
    assert status.given_up and status.needed == 0 and status.done


def test_dead_running_trials_do_not_block_a_cell() -> None:
    # a RUNNING trial whose worker is gone is not "running" for the cell's needs
    trials = [_trial(0, TrialState.RUNNING, worker="h:1:1")]
    assert P.cell_status(trials, budget=1, max_retries=0, alive=lambda t: False).needed == 1
    assert P.cell_status(trials, budget=1, max_retries=0, alive=lambda t: True).needed == 0


def test_best_trial_is_the_highest_val_acc_earliest_on_ties() -> None:
    # pruned and failed trials are never chosen; ties go to the earlier trial
    trials = [
        _trial(0, TrialState.PRUNED),
        _trial(1, TrialState.COMPLETE, 0.7),
        _trial(2, TrialState.COMPLETE, 0.7),
    ]
    best = P.best_trial(trials)
    assert best is not None and best.number == 1
    assert P.best_trial([_trial(0, TrialState.PRUNED)]) is None


def test_final_slots_are_claimed_once() -> None:
    # a duplicate enqueued final loses to the earlier trial of the same slot; a dead one is redone
    slot = P.final_slot("strategy=linear_probe", 1)
    first = _trial(0, TrialState.RUNNING, **{P.SLOT: slot.key})
    second = _trial(1, TrialState.RUNNING, **{P.SLOT: slot.key})
    assert P.first_claim([first, second], first) and not P.first_claim([first, second], second)
    died = _fail(0, "died")
    died.user_attrs = {**died.user_attrs, P.SLOT: slot.key}
    assert P.slot_needs_trial([died], slot, max_retries=1)
    assert not P.slot_needs_trial([first], slot, max_retries=1)


def test_pruner_ignores_dead_trials_and_keeps_a_result_per_cell() -> None:
    # successive halving over counted trials only, and never before the cell has a completed trial
    study = optuna.create_study(direction="maximize", pruner=make_pruner(PrunerSpec("successive_halving")))
    dead = study.ask()
    dead.report(0.9, 1)
    dead.should_prune()
    dead.set_user_attr(P.FAIL_KIND, "died")
    study.tell(dead, state=TrialState.FAIL)
    redo = study.ask()
    redo.report(0.1, 1)
    assert not redo.should_prune()  # worse than the dead trial, but nothing has completed yet
    study.tell(redo, 0.1)
    worse = study.ask()
    worse.report(0.05, 1)
    assert worse.should_prune()  # below the completed trial at the same epoch
    study.tell(worse, state=TrialState.PRUNED)
    better = study.ask()
    better.report(0.5, 1)
    assert not better.should_prune()  # the dead trial's 0.9 does not count
