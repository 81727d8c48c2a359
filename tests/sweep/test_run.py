"""The live view's numbers, the timing and summary tables, several worker processes on one study."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from tlbench.commands.sweep import main as sweep_main
from tlbench.sweep.plan import CELL as CELL_ATTR
from tlbench.sweep.plan import COLLAPSED, FAIL_KIND, FAIL_REASON, fail_kind, is_counted
from tlbench.sweep.run import (
    cell_results,
    format_duration,
    format_results,
    parent_params,
    progress_info,
    render_line,
    time_breakdown,
)
from tlbench.sweep.spec import load_sweep
from tlbench.sweep.study import open_study, resolve_storage

from .conftest import DYING, SLOW_EPOCHS, TINY_BASE, SweepWriter

# --- progress ---
# The live view's numbers (computed apart from the drawing) and the end-of-sweep timing table.
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
        _trial(TrialState.FAIL, 2, strategy="scratch", **{FAIL_KIND: "died"}),
        _trial(TrialState.FAIL, 0, **{FAIL_KIND: "over_budget"}),  # a lost claim: not shown
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


# --- summary ---
# The end-of-sweep table: a collapsed final seed is a counted failure, never part of the mean.
CELL = "strategy=lp_ft,data.n_per_class=10"
LR = {"optimizer.lr": FloatDistribution(1e-5, 1e-2, log=True)}


def _summary_trial(
    number: int, *, state: TrialState, value: float | None, attrs: dict[str, object]
) -> FrozenTrial:
    trial = create_trial(
        state=state, value=value, params={"optimizer.lr": 1e-3}, distributions=LR, user_attrs=attrs
    )
    trial.number = number
    return trial


def test_a_collapsed_final_is_counted_as_collapsed_and_left_out_of_the_mean() -> None:
    tune = [_summary_trial(0, state=TrialState.COMPLETE, value=0.7, attrs={CELL_ATTR: CELL})]
    ok = _summary_trial(1, state=TrialState.COMPLETE, value=0.7, attrs={CELL_ATTR: CELL, "test_acc": 0.72})
    failed = _summary_trial(
        2,
        state=TrialState.FAIL,
        value=None,
        attrs={CELL_ATTR: CELL, "test_acc": 0.10, FAIL_KIND: COLLAPSED, FAIL_REASON: "collapsed: chance"},
    )
    (result,) = cell_results({CELL: tune}, [ok, failed], budgets={CELL: 1})
    assert result.final_test == (0.72,)  # the seed at chance is not averaged in
    assert result.collapsed == 1
    table = format_results([result])
    assert "0.7200, n=1" in table and "1 collapsed" in table


# --- workers ---
# Several processes on one study: resume after kill -9, two local workers, the parent-run election.
THREE_CELLS: dict[str, Any] = {
    "factors": {"data.n_per_class": [4, 6, 8]},
    "search": {"optimizer.lr": {"low": 1e-3, "high": 0.1, "log": True}},
    "budget": {"trials_per_cell": 2},
    "final": {"seeds": [1]},
}
CELLS = [f"data.n_per_class={n}" for n in (4, 6, 8)]
# In a worker log, signs of trouble with the storage or the tracking store (a clean run has none).
LOG_TROUBLE = re.compile(r"Traceback|Error|\b[Ll]ock|[Tt]imed out|could not serialize|deadlock")


def _wait_for(condition: Any, *, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc is None or proc.poll() is None, "the sweep ended before the condition was met"
        assert time.monotonic() < deadline, "timed out waiting for the sweep"
        time.sleep(0.2)


def _completed(study: Any) -> set[tuple[str, int, Any]]:
    return {
        (name, t.number, t.datetime_complete)
        for name in [*CELLS, "final"]
        for t in study.trials(name)
        if t.state == TrialState.COMPLETE
    }


def assert_each_trial_ran_once(study: Any, *, workers: int, study_dir: Path) -> None:
    """Budgets met exactly; one MLflow child run per counted trial, none twice; one finished parent; nothing
    left RUNNING; ``workers`` worker logs, none with an error in it."""
    counted: list[tuple[str, int]] = []
    for name in [*CELLS, "final"]:
        trials = study.trials(name)
        assert all(is_counted(t) or fail_kind(t) in {"over_budget", "duplicate"} for t in trials)
        counted += [(f"{study.study}/{name}", t.number) for t in trials if is_counted(t)]
    assert Counter(name for name, _ in counted) == {
        **{f"{study.study}/{cell}": 2 for cell in CELLS},
        f"{study.study}/final": 3,
    }
    ran = Counter((r.data.tags["optuna_study"], int(r.data.tags["trial_number"])) for r in study.children())
    assert sorted(ran) == sorted(counted) and max(ran.values()) == 1, ran
    assert all(r.info.status != "RUNNING" for r in study.runs())
    parents = study.parents()
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    logs = sorted((study_dir / ".tlbench" / "logs" / study.study).glob("worker-*.log"))
    assert len(logs) == workers
    for log in logs:
        text = log.read_text()
        trouble = LOG_TROUBLE.findall(text)
        assert not trouble, f"{log.name}: {trouble}\n{text[-2000:]}"


def test_resume_after_kill_9_recomputes_nothing_and_redoes_the_killed_trial(
    write_sweep: SweepWriter, reader: Any
) -> None:
    # kill -9 mid-trial, rerun: same finished-trial count as an uninterrupted run, none computed twice
    sweep = write_sweep("killed", **THREE_CELLS, base=[*TINY_BASE, "trainer.epochs=10"])
    # the killed process trains slowly (0.3 s per epoch): even a loaded machine catches a trial mid-way
    script = DYING.format(patch=textwrap.dedent(SLOW_EPOCHS))
    command = [sys.executable, "-c", script, str(sweep)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    study = reader("killed")

    def one_done_one_running() -> bool:
        # a finished trial, and a trial RUNNING in Optuna whose MLflow run is RUNNING too: it is
        # training (not between its MLflow end and Optuna's tell, which a kill would miss)
        if not study.journal.exists():
            return False
        trials = [(f"killed/{name}", t) for name in CELLS for t in study.trials(name)]
        if not any(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for _, t in trials):
            return False
        running = {(name, str(t.number)) for name, t in trials if t.state == TrialState.RUNNING}
        try:
            children = study.children()
        except AssertionError:  # experiment not created yet
            return False
        live = [r for r in children if r.info.status == "RUNNING"]
        return any((r.data.tags["optuna_study"], r.data.tags["trial_number"]) in running for r in live)

    try:
        _wait_for(one_done_one_running, timeout=240, proc=proc)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    before = _completed(study)
    running = [(n, t.number) for n in CELLS for t in study.trials(n) if t.state == TrialState.RUNNING]
    assert len(running) == 1 and before
    assert sweep_main(["--sweep", str(sweep)]) == 0
    # the killed trial is failed as "worker died" and redone; finished trials are untouched
    name, number = running[0]
    killed = study.trials(name)[number]
    assert killed.state == TrialState.FAIL and killed.user_attrs[FAIL_KIND] == "died"
    assert before <= _completed(study)
    assert all(sum(is_counted(t) for t in study.trials(c)) == 2 for c in CELLS)
    assert sum(is_counted(t) for t in study.trials("final")) == 3
    # MLflow: one run per trial that ran, the killed one KILLED, nothing RUNNING, one parent
    children = study.children()
    keys = Counter((r.data.tags["optuna_study"], r.data.tags["trial_number"]) for r in children)
    assert max(keys.values()) == 1
    finished = [r for r in children if r.info.status in ("FINISHED",) or r.data.tags["status"] == "pruned"]
    assert len(finished) == 2 * 3 + 3
    killed_run = [r for r in children if keys and r.data.tags["trial_number"] == str(number)
                  and r.data.tags["optuna_study"] == f"killed/{name}"]  # fmt: skip
    assert (
        killed_run[0].info.status == "KILLED" and killed_run[0].data.tags["status"] == "failed: worker died"
    )
    assert all(r.info.status != "RUNNING" for r in study.runs())
    parents = study.parents()
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"


def test_two_workers_share_one_study_and_one_parent_run(
    write_sweep: SweepWriter, reader: Any, study_dir: Path
) -> None:
    # WORKERS=2: both processes claim trials, budgets hold exactly, one parent run, no storage errors
    sweep = write_sweep("pair", **THREE_CELLS)
    assert sweep_main(["--sweep", str(sweep), "--workers", "2"]) == 0
    study = reader("pair")
    for cell in CELLS:
        trials = study.trials(cell)
        assert sum(is_counted(t) for t in trials) == 2
        assert all(is_counted(t) or fail_kind(t) in {"over_budget"} for t in trials)
    assert sum(is_counted(t) for t in study.trials("final")) == 3
    workers = {t.user_attrs.get("worker") for c in CELLS for t in study.trials(c)}
    assert len(workers) == 2
    parents = study.parents()
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert all(r.info.status != "RUNNING" for r in study.runs())
    logs = list((study_dir / ".tlbench" / "logs" / "pair").glob("worker-*.log"))
    assert len(logs) == 2
    for log in logs:
        text = log.read_text()
        assert "Traceback" not in text and "Error" not in text, text[-2000:]


def test_workers_starting_together_elect_one_parent_run(write_sweep: SweepWriter, reader: Any) -> None:
    # two openers racing on a fresh study agree on one parent run; the loser's candidate is deleted
    spec = load_sweep(str(write_sweep("race", **THREE_CELLS)))
    ref = resolve_storage(None, "race")
    barrier = threading.Barrier(2)
    chosen: list[str] = []

    def open_one() -> None:
        barrier.wait()
        ctx = open_study(spec, "race", ref, tracking_uri=None, params=parent_params(spec, ref))
        chosen.append(ctx.parent_run_id)

    threads = [threading.Thread(target=open_one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(chosen) == 2 and chosen[0] == chosen[1]
    assert [r.info.run_id for r in reader("race").parents()] == [chosen[0]]


def test_four_workers_on_the_journal_run_every_trial_exactly_once(
    write_sweep: SweepWriter, reader: Any, study_dir: Path
) -> None:
    # WORKERS=4 on the default journal file (its file lock serialises appends): 9 trials, each run once
    sweep = write_sweep("four", **THREE_CELLS)
    assert sweep_main(["--sweep", str(sweep), "--workers", "4"]) == 0
    study = reader("four")
    assert study.journal.is_file() and all(n.startswith("four/") for n in study.study_names())
    assert_each_trial_ran_once(study, workers=4, study_dir=study_dir)
    workers = {t.user_attrs.get("worker") for c in [*CELLS, "final"] for t in study.trials(c)}
    assert len(workers) >= 2  # they did share the work
