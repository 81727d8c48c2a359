"""Racing finals: rounds of paired seeds, retirement on validation only, the cap (issue 19)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState, create_trial

from tlbench.commands.sweep import main as sweep_main
from tlbench.errors import ConfigError
from tlbench.run import train as real_train
from tlbench.sweep.plan import CELL, SLOT, final_slot, is_counted
from tlbench.sweep.race import AT_CAP, DECIDED, RACING, Arm, Outcome, compare, race_seeds, run_race
from tlbench.sweep.spec import Race, parse_sweep
from tlbench.sweep.worker import _outcomes
from tlbench.tracking import names

from .conftest import TINY_BASE, SweepWriter

ROUNDS = race_seeds([1, 2, 3], Race(cap=7, round=2), tune_seed=0)


def _arm(cell: str) -> Arm:
    return Arm(cell=cell, strategy=cell, size=5, factors={"strategy": cell})


def _results(vals: dict[str, list[float]], costs: dict[str, float], seeds: list[int]) -> dict[str, Any]:
    return {
        cell: {s: Outcome(done=True, val_acc=v, cost=costs[cell]) for s, v in zip(seeds, accs, strict=True)}
        for cell, accs in vals.items()
    }


def test_round_seeds_continue_after_the_final_seeds_and_skip_the_tuning_seed() -> None:
    # round 1 = final.seeds; then 2 new seeds per round up to 7 seeds per arm; no race: one round
    assert race_seeds([1, 2, 3], Race(cap=7, round=2), tune_seed=0) == [[1, 2, 3], [4, 5], [6, 7]]
    assert race_seeds([1, 2], Race(cap=5, round=2), tune_seed=3) == [[1, 2], [4, 5], [6]]
    assert race_seeds([1, 2, 3], None, tune_seed=0) == [[1, 2, 3]]


def test_paired_interval() -> None:
    # differences 0.10, 0.12, 0.08: mean 0.10, sd 0.02, t(2) = 4.303 -> half width 0.0497
    cmp = compare({1: 0.9, 2: 0.92, 3: 0.88}, {1: 0.8, 2: 0.8, 3: 0.8})
    assert cmp is not None and cmp.mean == pytest.approx(0.10)
    assert (cmp.low, cmp.high) == (pytest.approx(0.0503, abs=1e-4), pytest.approx(0.1497, abs=1e-4))
    assert cmp.credible and not cmp.constant
    assert compare({1: 0.9}, {1: 0.8, 2: 0.7}) is None  # one common seed: no interval
    # the same difference on both seeds (one validation image of 49, twice): no spread, so no interval,
    # never a zero-width "credible" one (the photo study retired two arms on exactly this)
    same = compare({1: 0.98, 2: 0.96}, {1: 0.96, 2: 0.94})
    assert same is not None and not same.credible and not same.constant


@pytest.mark.parametrize(
    ("vals", "costs", "reasons", "retired"),
    [
        # far worse and no cheaper: retired after round 1; the survivor has nobody left to race
        (
            {"probe": [0.9, 0.92, 0.88], "scratch": [0.5, 0.55, 0.52]},
            {"probe": 1.0, "scratch": 3.0},
            {"probe": DECIDED, "scratch": "credibly worse on validation than probe (+37.7 pp"},
            {"scratch": 1},
        ),
        # credibly better but dearer: both stay on the front, decided
        (
            {"probe": [0.8, 0.81, 0.79], "full": [0.9, 0.92, 0.91]},
            {"probe": 1.0, "full": 3.0},
            {"probe": DECIDED, "full": DECIDED},
            {},
        ),
        # within the cost tolerance counts as "no more": the cheaper-looking worse arm is retired
        (
            {"partial": [0.8, 0.81, 0.79], "full": [0.9, 0.92, 0.91]},
            {"partial": 1.0, "full": 1.05},
            {"partial": "credibly worse on validation than full", "full": DECIDED},
            {"partial": 1},
        ),
        # seeds cannot tell two arms apart that do not vary with the seed: decided, nobody retired
        (
            {"probe": [0.9, 0.9, 0.9], "as_is": [0.88, 0.88, 0.88]},
            {"probe": 1.0, "as_is": 0.0},
            {"probe": DECIDED, "as_is": DECIDED},
            {},
        ),
    ],
)
def test_round_one_decisions(
    vals: dict[str, list[float]], costs: dict[str, float], reasons: dict[str, str], retired: dict[str, int]
) -> None:
    # after round 1 (seeds 1-3), each arm is retired, decided, or races on
    state, reached = run_race([_arm(c) for c in vals], _results(vals, costs, [1, 2, 3]), ROUNDS)
    assert reached == 1
    for r in state:
        assert r.reason.startswith(reasons[r.arm.cell]), r.reason
        assert r.retired_round == retired.get(r.arm.cell)
        assert r.seeds == [1, 2, 3]


def test_undecided_arms_get_the_same_new_seeds_up_to_the_cap() -> None:
    # two close arms: round 2 gives both seeds 4, 5; with 7 results each and still close: the cap
    close = {"a": [0.8, 0.9, 0.7], "b": [0.82, 0.85, 0.75]}
    state, reached = run_race([_arm("a"), _arm("b")], _results(close, {"a": 1, "b": 1}, [1, 2, 3]), ROUNDS)
    assert reached == 2 and all(r.seeds == [1, 2, 3, 4, 5] and r.reason == RACING for r in state)
    more = {"a": [0.8, 0.9, 0.7, 0.85, 0.8, 0.78, 0.9], "b": [0.82, 0.85, 0.75, 0.8, 0.84, 0.8, 0.86]}
    state, reached = run_race(
        [_arm("a"), _arm("b")], _results(more, {"a": 1, "b": 1}, [1, 2, 3, 4, 5, 6, 7]), ROUNDS
    )
    assert reached == 3 and all(r.seeds == [1, 2, 3, 4, 5, 6, 7] and r.reason == AT_CAP for r in state)


def test_a_replay_after_later_rounds_keeps_each_rounds_decision() -> None:
    # round 1 (seeds 1-3) is undecided, so both arms get seeds 4 and 5; round 2 then retires b. Replayed
    # at the end of the sweep (every seed's result in storage), round 1 must still be decided on seeds
    # 1-3 only: b retired in round 2 with its 5 seeds, never "retired in round 1" with seeds it ran later.
    vals = {"a": [0.85, 0.86, 0.79, 0.85, 0.86], "b": [0.8, 0.8, 0.8, 0.8, 0.8]}
    after_round_one = _results({c: v[:3] for c, v in vals.items()}, {"a": 1, "b": 1}, [1, 2, 3])
    state, reached = run_race([_arm("a"), _arm("b")], after_round_one, ROUNDS)
    assert reached == 2 and all(r.reason == RACING and r.seeds == [1, 2, 3, 4, 5] for r in state)
    everything = _results(vals, {"a": 1, "b": 1}, [1, 2, 3, 4, 5])
    assert compare(
        {s: v for s, v in zip([1, 2, 3, 4, 5], vals["a"], strict=True)},
        {s: v for s, v in zip([1, 2, 3, 4, 5], vals["b"], strict=True)},
    ).credible  # type: ignore[union-attr]  # all five seeds together would retire b in round 1
    state, reached = run_race([_arm("a"), _arm("b")], everything, ROUNDS)
    b = next(r for r in state if r.arm.cell == "b")
    assert reached == 2 and b.retired_round == 2 and b.seeds == [1, 2, 3, 4, 5]


def _final(number: int, cell: str, seed: int, val: float, test: float) -> FrozenTrial:
    trial = create_trial(
        state=TrialState.COMPLETE,
        value=val,
        user_attrs={SLOT: final_slot(cell, seed).key, CELL: cell, "val_acc": val, "test_acc": test,
                    "cost_standalone_device_hours": 1.0 if cell == "a" else 2.0},
    )  # fmt: skip
    trial.number = number
    return trial


def test_test_accuracy_never_changes_a_decision() -> None:
    # the same validation results with any test accuracies (here: inverted) give the same race
    vals = {"a": [0.9, 0.92, 0.88], "b": [0.6, 0.65, 0.58]}

    def trials(test: dict[str, float]) -> list[FrozenTrial]:
        pairs = [(c, s, v) for c, accs in vals.items() for s, v in zip([1, 2, 3], accs, strict=True)]
        return [_final(i, c, s, v, test[c]) for i, (c, s, v) in enumerate(pairs)]

    races = []
    for test in ({"a": 0.9, "b": 0.6}, {"a": 0.1, "b": 0.99}):
        outcomes = _outcomes(trials(test), ["a", "b"], max_retries=2)
        state, reached = run_race([_arm("a"), _arm("b")], outcomes, ROUNDS)
        races.append([(r.arm.cell, r.seeds, r.retired_round, r.reason, reached) for r in state])
    assert races[0] == races[1] and races[0][1][2] == 1  # b retired in round 1 both times


@pytest.mark.parametrize(
    ("final", "message"),
    [
        ({"seeds": [1], "race": {}}, "final.race needs at least 2 final.seeds"),
        ({"seeds": [1, 2, 3], "race": {"cap": 2}}, "final.race.cap must be an integer >= 3, got 2"),
        ({"seeds": [1, 2], "race": {"round": 0}}, "final.race.round must be an integer >= 1, got 0"),
        ({"seeds": [1, 2], "race": {"cap": "eight"}}, "final.race.cap must be an integer"),
        (
            {"seeds": [1, 2], "race": {"rounds": 2}},
            "unknown key 'rounds' in final.race — did you mean 'round'",
        ),
    ],
)
def test_a_bad_race_setting_is_one_line_naming_the_key(final: dict[str, Any], message: str) -> None:
    # checked when the file is read, before anything runs
    data = {
        **{"base": TINY_BASE, "factors": {"strategy": ["linear_probe", "partial"]}, "final": final},
        **{"search": {"optimizer.lr": {"low": 1e-3, "high": 0.1}}, "budget": {"trials_per_cell": 2}},
    }
    with pytest.raises(ConfigError) as info:
        parse_sweep(data, name="bad")
    assert message in str(info.value) and "\n" not in str(info.value)


RACED: dict[str, Any] = {
    # two cheap arms at one data size (linear probes trained by SGD, with and without weight decay)
    "factors": {"optimizer.weight_decay": [0.0, 0.5]},
    "search": {"optimizer.lr": {"low": 1e-2, "high": 0.1, "log": True}},
    "budget": {"trials_per_cell": 1},
    "final": {"seeds": [1, 2], "race": {"cap": 4, "round": 2}},
}


@pytest.mark.slow  # two sweep commands, 12 trials: ~30 s alone, 90 s on the shared CPU
def test_a_raced_study_records_rounds_and_race_json_and_resumes(
    write_sweep: SweepWriter, reader: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # interrupted during the finals, then resumed: every (arm, seed) runs once, finals carry their round,
    # the parent run's race.json lists each arm's seeds as run
    calls = {"final": 0}

    def interrupt_third_final(cfg: Any, *, callbacks: Any = ()) -> Any:
        if cfg.tags.get("role") == "final":
            calls["final"] += 1
            if calls["final"] == 3:
                raise KeyboardInterrupt
        return real_train(cfg, callbacks=callbacks)

    monkeypatch.setattr("tlbench.sweep.worker.train", interrupt_third_final)
    sweep = write_sweep("raced", **RACED)
    assert sweep_main(["--sweep", str(sweep)]) == 130
    monkeypatch.setattr("tlbench.sweep.worker.train", real_train)
    assert sweep_main(["--sweep", str(sweep)]) == 0
    study = reader("raced")
    finals = [t for t in study.trials("final") if is_counted(t)]
    assert all(n == 1 for n in Counter(t.user_attrs[SLOT] for t in finals).values())
    parent = study.parents()[0]
    path = MlflowClient(study.client.tracking_uri).download_artifacts(parent.info.run_id, names.RACE_ARTIFACT)
    document = json.loads(Path(path).read_text())
    assert set(document) == {"rule", "cap", "rounds", "arms"} and document["cap"] == 4
    assert len(document["arms"]) == 2
    runs = study.children(names.FINAL)
    for arm in document["arms"]:
        mine = [r for r in runs if r.data.tags[names.CELL] == arm["cell"] and r.info.status == "FINISHED"]
        assert sorted(int(r.data.params["seed"]) for r in mine) == sorted(arm["seeds"])
        assert arm["seeds"][:2] == [1, 2] and arm["reason"] != RACING
        for run in mine:
            assert run.data.tags[names.RACE_ROUND] == ("1" if int(run.data.params["seed"]) <= 2 else "2")
