"""The live view's numbers (computed apart from the drawing) and the end-of-sweep timing table."""

from __future__ import annotations

import datetime as dt
from typing import Any

from optuna.trial import FrozenTrial, TrialState, create_trial

from tlbench.sweep import protocol as P
from tlbench.sweep.progress import format_duration, progress_info
from tlbench.sweep.timing import time_breakdown
from tlbench.sweep.view import render_line

T0 = dt.datetime(2026, 1, 1, 12, 0, 0)


def _trial(state: TrialState, seconds: float, value: float | None = None, **attrs: Any) -> FrozenTrial:
    trial = create_trial(state=state, value=value, user_attrs=attrs)
    trial.datetime_start = T0
    trial.datetime_complete = T0 + dt.timedelta(seconds=seconds) if state.is_finished() else None
    return trial


def test_progress_counts_best_per_strategy_and_eta() -> None:
    # done/pruned/failed/redone/running per phase, best tuning val/acc per strategy, ETA from mean durations
    tune = [
        _trial(TrialState.COMPLETE, 10, 0.6, strategy="scratch", cost_fit_seconds=8.0),
        _trial(TrialState.COMPLETE, 10, 0.8, strategy="linear_probe", cost_fit_seconds=9.0),
        _trial(TrialState.PRUNED, 4, strategy="scratch"),
        _trial(TrialState.FAIL, 2, strategy="scratch", **{P.FAIL_KIND: "died"}),
        _trial(TrialState.FAIL, 0, **{P.FAIL_KIND: "over_budget"}),  # a lost claim: not shown
        _trial(TrialState.RUNNING, 0, strategy="scratch"),
    ]
    final = [_trial(TrialState.COMPLETE, 20, 0.7, strategy="scratch")]
    info = progress_info({"tune": tune, "final": final}, {"tune": 6, "final": 4}, elapsed_s=60, workers=2)
    t, f = info.phases
    assert (t.complete, t.pruned, t.failed, t.redone, t.running, t.remaining) == (2, 1, 0, 1, 1, 3)
    assert (f.complete, f.remaining) == (1, 3)
    assert info.best == {"linear_probe": 0.8, "scratch": 0.6}
    assert info.eta_s == (3 * 8 + 3 * 20) / 2  # mean tune trial 8 s, final 20 s, two workers
    assert "tune 3/6 (1 pruned, 1 running)" in render_line(info)
    assert format_duration(75) == "1m15s" and format_duration(None) == "?"
    rows = {(r.phase, r.strategy): r for r in time_breakdown({"tune": tune, "final": final})}
    assert rows[("tune", "scratch")].trials == 3 and rows[("tune", "scratch")].fit_s == 8.0
