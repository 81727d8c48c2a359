"""The fair protocol over stored trials, checks against the config tree, the plan's estimate and ETA."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState, create_trial

from tlbench.errors import ConfigError
from tlbench.sweep.plan import (
    FAIL_KIND,
    SLOT,
    TRIAL_OVERHEAD_S,
    CellFacts,
    DataCounts,
    Finished,
    Running,
    Throughput,
    WorkItem,
    best_trial,
    cell_status,
    check_against_config,
    claim_within_budget,
    countdown,
    eta_errors,
    final_slot,
    first_claim,
    format_plan,
    is_counted,
    plan_sweep,
    planned_on_graph,
    slot_needs_trial,
    trial_seconds,
)
from tlbench.sweep.spec import PrunerSpec, load_sweep, parse_sweep
from tlbench.sweep.worker import make_pruner

from .conftest import TINY_BASE


# --- protocol ---
# The fair protocol as pure functions of stored trials: counting, claims, best trial, final slots.
def _trial(number: int, state: TrialState, value: float | None = None, **attrs: Any) -> FrozenTrial:
    trial = create_trial(state=state, value=value if state == TrialState.COMPLETE else None, user_attrs=attrs)
    trial.number = number
    return trial


def _fail(number: int, kind: str) -> FrozenTrial:
    return _trial(number, TrialState.FAIL, **{FAIL_KIND: kind})


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
    assert is_counted(trial) is counted


def test_optimistic_claims_never_overshoot_the_budget() -> None:
    # budget 2: the two lowest-numbered live-or-counted trials win; a third concurrent claim loses
    trials = [
        _trial(0, TrialState.COMPLETE, 0.1),
        _fail(1, "died"),
        _trial(2, TrialState.RUNNING),
        _trial(3, TrialState.RUNNING),
    ]
    assert claim_within_budget(trials, 2, budget=2)
    assert not claim_within_budget(trials, 3, budget=2)


def test_cell_status_redoes_dead_work_and_gives_up_on_crash_loops() -> None:
    # a died trial is redone; more crashes than max_retries and the cell is given up
    alive = lambda t: True  # noqa: E731
    status = cell_status(
        [_trial(0, TrialState.COMPLETE, 0.3), _fail(1, "died")], budget=2, max_retries=2, alive=alive
    )
    assert (status.counted, status.needed, status.done) == (1, 1, False)
    crashes = [_fail(i, "error") for i in range(3)]
    status = cell_status(crashes, budget=2, max_retries=2, alive=alive)
    assert status.given_up and status.needed == 0 and status.done


def test_dead_running_trials_do_not_block_a_cell() -> None:
    # a RUNNING trial whose worker is gone is not "running" for the cell's needs
    trials = [_trial(0, TrialState.RUNNING, worker="h:1:1")]
    assert cell_status(trials, budget=1, max_retries=0, alive=lambda t: False).needed == 1
    assert cell_status(trials, budget=1, max_retries=0, alive=lambda t: True).needed == 0


def test_best_trial_is_the_highest_val_acc_earliest_on_ties() -> None:
    # pruned and failed trials are never chosen; ties go to the earlier trial
    trials = [
        _trial(0, TrialState.PRUNED),
        _trial(1, TrialState.COMPLETE, 0.7),
        _trial(2, TrialState.COMPLETE, 0.7),
    ]
    best = best_trial(trials)
    assert best is not None and best.number == 1
    assert best_trial([_trial(0, TrialState.PRUNED)]) is None


def test_final_slots_are_claimed_once() -> None:
    # a duplicate enqueued final loses to the earlier trial of the same slot; a dead one is redone
    slot = final_slot("strategy=linear_probe", 1)
    first = _trial(0, TrialState.RUNNING, **{SLOT: slot.key})
    second = _trial(1, TrialState.RUNNING, **{SLOT: slot.key})
    assert first_claim([first, second], first) and not first_claim([first, second], second)
    died = _fail(0, "died")
    died.user_attrs = {**died.user_attrs, SLOT: slot.key}
    assert slot_needs_trial([died], slot, max_retries=1)
    assert not slot_needs_trial([first], slot, max_retries=1)


def test_pruner_ignores_dead_trials_and_keeps_a_result_per_cell() -> None:
    # successive halving over counted trials only, and never before the cell has a completed trial
    study = optuna.create_study(direction="maximize", pruner=make_pruner(PrunerSpec("successive_halving")))
    dead = study.ask()
    dead.report(0.9, 1)
    dead.should_prune()
    dead.set_user_attr(FAIL_KIND, "died")
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


# --- check ---
# Checking a sweep against the config tree: a searched key its strategy ignores is refused at load.
BASE = ["data=synthetic", "trainer=quick", "data.samples_per_class=20", "trainer.count_flops=false"]
LR = {"optimizer.lr": {"low": 1e-4, "high": 0.1, "log": True}}
L2 = {"strategy.probe.l2": {"low": 1e-6, "high": 1.0, "log": True}}


def _sweep(tmp_path: Path, **sections: Any) -> Path:
    path = tmp_path / "mine.yaml"
    body = {"base": BASE, "budget": {"trials_per_cell": 2}, "final": {"seeds": [1]}, **sections}
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.mark.parametrize(
    ("sections", "strategy", "key"),
    [
        # the L-BFGS probe has no learning rate: searching one spends every trial on the same model
        (
            {"factors": {"strategy": ["linear_probe", "full_finetune"]}, "search": LR},
            "linear_probe",
            "optimizer.lr",
        ),
        # a strategy without a probe never reads strategy.probe.*
        ({"factors": {"strategy": ["scratch"]}, "search": L2}, "scratch", "strategy.probe.l2"),
        # the strategy may come from the base instead of a factor
        ({"base": [*BASE, "strategy=full_finetune"], "search": L2}, "full_finetune", "strategy.probe.l2"),
        # only the cell that searches it is refused: search_where
        (
            {
                "factors": {"strategy": ["partial", "linear_probe"]},
                "search_where": {"strategy=linear_probe": LR},
            },
            "linear_probe",
            "optimizer.lr",
        ),
    ],
)
def test_a_searched_key_the_strategy_ignores_is_refused(
    tmp_path: Path, sections: dict[str, Any], strategy: str, key: str
) -> None:
    # one line naming the strategy, the key and the file, before any study exists
    path = _sweep(tmp_path, **sections)
    with pytest.raises(ConfigError) as info:
        check_against_config(load_sweep(str(path)))
    message = str(info.value)
    assert f"strategy {strategy} ignores '{key}'" in message and str(path) in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "sections",
    [
        # a probe trained by SGD does read the learning rate
        {
            "factors": {"strategy": ["linear_probe"]},
            "where": {"strategy=linear_probe": ["strategy.probe.solver=sgd"]},
            "search": LR,
        },
        # lp_ft reads both: its probe's L2 and its fine-tune's learning rate
        {"factors": {"strategy": ["lp_ft"]}, "search": {**LR, **L2}},
        # each strategy searching what it uses
        {
            "factors": {"strategy": ["linear_probe", "full_finetune"]},
            "search_where": {"strategy=linear_probe": L2, "strategy=full_finetune": LR},
        },
    ],
)
def test_searched_keys_the_strategy_reads_are_accepted(tmp_path: Path, sections: dict[str, Any]) -> None:
    # the refusal is specific: these compose and pass
    assert check_against_config(load_sweep(str(_sweep(tmp_path, **sections)))).tracking.enabled


def test_lora_on_layers_it_cannot_adapt_is_refused_before_anything_runs(tmp_path: Path) -> None:
    # depthwise convolutions take no LoRA adapter: the cell fails at load, naming the cell and the layer
    sections = {
        "factors": {"strategy": ["lora", "full_finetune"]},
        "where": {"strategy=lora": ["strategy.lora.targets=[conv_dw]"]},
        "search": LR,
    }
    with pytest.raises(ConfigError) as info:
        check_against_config(load_sweep(str(_sweep(tmp_path, **sections))))
    assert "cell strategy=lora" in str(info.value) and "'conv_dw' matches no adaptable layer" in str(
        info.value
    )


# --- estimate ---
# The plan's estimate, the countdown between trial ends, the ETA log's error, the compile hint.
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
    (tmp_path / "new.jsonl").write_text(json.dumps({"time": 1.0, "elapsed_s": 1.0, "eta_s": 5.0}) + "\n")
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
