"""The end-of-sweep table: a collapsed final seed is a counted failure, never part of the mean."""

from __future__ import annotations

from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from tlbench.sweep import protocol as P
from tlbench.sweep.summary import cell_results, format_results

CELL = "strategy=lp_ft,data.n_per_class=10"
LR = {"optimizer.lr": FloatDistribution(1e-5, 1e-2, log=True)}


def _trial(number: int, *, state: TrialState, value: float | None, attrs: dict[str, object]) -> FrozenTrial:
    trial = create_trial(
        state=state, value=value, params={"optimizer.lr": 1e-3}, distributions=LR, user_attrs=attrs
    )
    trial.number = number
    return trial


def test_a_collapsed_final_is_counted_as_collapsed_and_left_out_of_the_mean() -> None:
    tune = [_trial(0, state=TrialState.COMPLETE, value=0.7, attrs={P.CELL: CELL})]
    ok = _trial(1, state=TrialState.COMPLETE, value=0.7, attrs={P.CELL: CELL, "test_acc": 0.72})
    failed = _trial(
        2,
        state=TrialState.FAIL,
        value=None,
        attrs={P.CELL: CELL, "test_acc": 0.10, P.FAIL_KIND: P.COLLAPSED, P.FAIL_REASON: "collapsed: chance"},
    )
    (result,) = cell_results({CELL: tune}, [ok, failed], budgets={CELL: 1})
    assert result.final_test == (0.72,)  # the seed at chance is not averaged in
    assert result.collapsed == 1
    table = format_results([result])
    assert "0.7200, n=1" in table and "1 collapsed" in table
