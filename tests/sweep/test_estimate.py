"""The plan's estimate, the countdown between trial ends, the ETA log's error, the compile hint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tlbench.sweep.estimate import (
    TRIAL_OVERHEAD_S,
    DataCounts,
    Finished,
    Running,
    Throughput,
    WorkItem,
    countdown,
    eta_errors,
    format_plan,
    log_eta,
    trial_seconds,
)
from tlbench.sweep.loader import parse_sweep
from tlbench.sweep.plan import CellFacts, plan_sweep, planned_on_graph

from .conftest import TINY_BASE

TP = Throughput(train_s=0.1, eval_s=0.01, what="test")
COUNTS = DataCounts(pool_per_class=(100, 80), val=40, test=60)


def _facts(strategy: str, *, steps: bool = True, probe: bool = False) -> CellFacts:
    graph = ("b", "224", 8, strategy, None)
    return CellFacts(
        strategy=strategy, trains_by_steps=steps, min_steps=60, epochs=1, graph=graph, probe_first=probe,
        batch_size=8, val_checks=3,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("facts", "n", "expected"),
    [
        # 60 steps x 8 images x 0.1 s + 3 validation passes x 40 + (40 + 60) evaluated x 0.01 s
        (_facts("full_finetune"), 20, 48 + 1.2 + 1.0),
        # the L-BFGS probe: one extraction of train (20 + 20) + val + test
        (_facts("linear_probe", steps=False, probe=True), 20, (40 + 100) * 0.01),
        # lp_ft: the probe's extraction, then the fine-tune's steps
        (_facts("lp_ft", probe=True), None, (180 + 100) * 0.01 + 48 + 1.2 + 1.0),
        # as_is: validation and test only
        (_facts("as_is", steps=False), 20, 1.0),
    ],
)
def test_trial_seconds(facts: CellFacts, n: int | None, expected: float) -> None:
    # images through the network, at the measured seconds per image, plus the per-trial overhead
    assert trial_seconds(facts, COUNTS, n, TP) == pytest.approx(expected + TRIAL_OVERHEAD_S)


def test_countdown_scales_by_finished_trials_and_counts_down_while_one_runs() -> None:
    # two tuning trials of 10 s estimated; the first took 20 s (scale 2): 20 s for the second; after it
    # has run 5 s, 15 s are left; two workers share the rest
    items = [WorkItem("tune", "a", 2, 10.0)]
    finished = [Finished("tune", "a", 20.0)]
    assert countdown(items, finished, [Running("tune", "a", 0.0)], workers=1) == 20.0
    assert countdown(items, finished, [Running("tune", "a", 5.0)], workers=1) == 15.0
    assert countdown(items, [], [], workers=2) == 10.0
    # a racing round enqueued beyond the plan: its waiting finals count
    finals = [WorkItem("final", "a", 1, 10.0)]
    waiting = [Running("final", "a", 0.0, waiting=True)] * 3
    assert countdown(finals, [], waiting, workers=1) == 30.0


def test_eta_errors_from_the_log(tmp_path: Path) -> None:
    # a study that really took 100 s: the ETA said 90 s at t=0+25, 30 s at 50, 25 s at 75
    path = tmp_path / "eta.jsonl"
    start = 1000.0
    rows = [(25, 90.0), (50, 30.0), (75, 25.0), (100, 0.0)]
    path.write_text(
        "\n".join(
            json.dumps(
                {"time": start + t, "elapsed_s": t, "eta_s": eta, "done": 0, "planned": 1, "final": t == 100}
            )
            for t, eta in rows
        )
    )
    errors = eta_errors(path)
    assert errors[0.25]["error_s"] == pytest.approx(90 - 75) and errors[0.25]["relative"] == pytest.approx(
        0.2
    )
    assert errors[0.5]["error_s"] == pytest.approx(30 - 50)
    assert errors[0.75]["error_s"] == pytest.approx(0.0)
    log_eta(tmp_path / "new.jsonl", elapsed_s=1.0, eta_s=5.0, done=0, planned=3)
    with pytest.raises(ValueError, match="no final record"):
        eta_errors(tmp_path / "new.jsonl")


def test_the_plan_line_says_trials_time_and_throughput() -> None:
    # trials per phase, racing's maximum extra, device-minutes and minutes per worker
    line = format_plan({"tune": 12, "check": 4, "final": 30}, 1200.0, TP, workers=2, race_extra=20)
    assert line.startswith("plan: 12 tune, 4 check, 30 final (+ up to 20 more racing finals")
    assert "about 20 device-minutes" in line and "about 10 min with 2 worker(s)" in line
    assert "0.100 s per training image" in line


def test_planned_trials_count_what_a_worker_still_runs_on_one_graph() -> None:
    # 2 cells per strategy; partial and linear_probe train different graphs; 2 workers share the rest
    factors = {"strategy": ["linear_probe", "partial"], "data.n_per_class": [4, 8]}
    data = {"base": TINY_BASE, "factors": factors, "search": {"optimizer.lr": {"low": 1e-3, "high": 0.1}},
            "budget": {"trials_per_cell": 3}, "final": {"seeds": [1, 2]}}  # fmt: skip
    plan = plan_sweep(parse_sweep(data, name="p"))
    keys = [c.key for c in plan.cells]
    probe = plan.facts[keys[0]].graph
    due = dict.fromkeys(keys, 5)  # 3 tuning + 2 finals
    assert planned_on_graph(plan, probe, due=due, done={}, workers=1) == 10
    assert planned_on_graph(plan, probe, due=due, done={keys[0]: 5, keys[1]: 2}, workers=2) == 2
    assert planned_on_graph(plan, probe, due=due, done=due, workers=1) == 1  # never below this trial
