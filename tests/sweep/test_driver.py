"""End-to-end sweeps in-process: the fair protocol, failures, interruption, resume, the Pareto mode."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from optuna.trial import TrialState

from tlbench.commands.sweep import main as sweep_main
from tlbench.errors import TrackingError
from tlbench.run import TrialResult
from tlbench.run import train as real_train
from tlbench.sweep.plan import (
    CELL,
    COLLAPSED,
    FAIL_KIND,
    FAIL_REASON,
    SEED,
    TUNED_FROM,
    best_trial,
    is_counted,
)
from tlbench.tracking import names

from .conftest import SweepWriter

# Linear probes on cached features: the cheapest trials that still exercise the whole protocol.
TWO_CELLS: dict[str, Any] = {
    "factors": {"data.n_per_class": [4, 8]},
    "search": {"optimizer.lr": {"low": 1e-3, "high": 0.1, "log": True}},
    "budget": {"trials_per_cell": 2},
    "final": {"seeds": [1, 2]},
}
CELLS = ("data.n_per_class=4", "data.n_per_class=8")


def test_fair_protocol_equal_budget_then_finals_on_new_seeds(write_sweep: SweepWriter, reader: Any) -> None:
    # every cell gets exactly its budget; each cell's best config is re-run once per final seed
    assert sweep_main(["--sweep", str(write_sweep("fair", **TWO_CELLS))]) == 0
    study = reader("fair")
    finals = study.trials("final")
    for cell in CELLS:
        tune = study.trials(cell)
        assert sum(is_counted(t) for t in tune) == 2 and len(tune) == 2
        best = best_trial(tune)
        assert best is not None
        mine = [t for t in finals if t.user_attrs[CELL] == cell]
        assert sorted(t.user_attrs[SEED] for t in mine) == [1, 2]
        assert all(t.params == best.params and t.user_attrs[TUNED_FROM] == best.number for t in mine)
        assert all(t.state == TrialState.COMPLETE for t in mine)
    # MLflow: one parent, a child per trial with its role, nothing left running
    parents = study.parents()
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["status"] == "completed"
    children = study.children()
    assert Counter(r.data.tags["role"] for r in children) == {"tune": 4, "final": 4}
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    assert all(r.info.status != "RUNNING" for r in study.runs())
    for run in study.children("final"):
        assert run.data.params["seed"] in {"1", "2"} and run.data.tags["tuned_from_trial"].isdigit()
        assert "test/acc" in run.data.metrics
    # running it again computes nothing
    assert sweep_main(["--sweep", str(write_sweep("fair", **TWO_CELLS))]) == 0
    assert len(study.children()) == 8 and len(study.trials("final")) == 4


class _PoisonWeights(Callback):
    """Turns the head's weights into NaN at the second step: the loss diverges."""

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == 1:
            network = pl_module.network  # the cached-feature path wraps the network once more
            head = network.head if hasattr(network, "head") else network.network.head
            with torch.no_grad():
                for p in head.parameters():
                    p.fill_(math.nan)


def test_diverging_and_crashing_trials_are_recorded_and_the_sweep_goes_on(
    write_sweep: SweepWriter, reader: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a high LR "diverges" (poisoned deterministically) and counts; a crashing cell is given up after retries.
    # The good LR is 0.01: at 0.001 this tiny fit ends near chance on some seeds and is (rightly) "collapsed".
    def fake_train(cfg: Any, *, callbacks: Any = ()) -> Any:
        if cfg.data.n_per_class == 8:
            raise RuntimeError("simulated crash")
        extra = [_PoisonWeights()] if cfg.optimizer.lr > 0.05 else []
        return real_train(cfg, callbacks=[*callbacks, *extra])

    monkeypatch.setattr("tlbench.sweep.worker.train", fake_train)
    sweep = write_sweep(
        "fails",
        **{**TWO_CELLS, "search": {"optimizer.lr": {"choices": [0.01, 0.5]}}, "sampler": {"name": "grid"},
           "budget": {"trials_per_cell": 2, "max_retries": 1}, "final": {"seeds": [1]}},
    )  # fmt: skip
    assert sweep_main(["--sweep", str(sweep)]) == 0
    study = reader("fails")
    probe = study.trials(CELLS[0])
    diverged = [t for t in probe if t.state == TrialState.FAIL]
    assert len(diverged) == 1 and diverged[0].params["optimizer.lr"] == 0.5
    assert diverged[0].user_attrs[FAIL_KIND] == "config"
    assert diverged[0].user_attrs[FAIL_REASON].startswith("diverged")
    assert sum(is_counted(t) for t in probe) == 2
    crashed = study.trials(CELLS[1])
    assert [t.user_attrs[FAIL_KIND] for t in crashed] == ["error", "error"]  # max_retries=1: tried twice
    assert crashed[0].user_attrs[FAIL_REASON] == "RuntimeError: simulated crash"
    # MLflow: the diverged run is FAILED with its reason; crashes have a FAILED run too
    failed = [r for r in study.children() if r.info.status == "FAILED"]
    assert len(failed) == 3, [r.data.tags.get("status") for r in failed]
    assert any(r.data.tags["status"].startswith("failed: diverged") for r in failed)
    # the probe cell still got its final run, from the trial that did not diverge
    finals = study.trials("final")
    assert len(finals) == 1 and finals[0].params["optimizer.lr"] == 0.01
    assert study.parents()[0].info.status == "FINISHED"


def test_ctrl_c_leaves_the_study_resumable_and_nothing_running(
    write_sweep: SweepWriter, reader: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an interrupt mid-sweep: the trial is failed as interrupted, the parent run KILLED; a rerun finishes
    calls = {"n": 0}

    def interrupt_second(cfg: Any, *, callbacks: Any = ()) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_train(cfg, callbacks=callbacks)

    monkeypatch.setattr("tlbench.sweep.worker.train", interrupt_second)
    sweep = write_sweep("ctrlc", **{**TWO_CELLS, "final": {"seeds": [1]}})
    assert sweep_main(["--sweep", str(sweep)]) == 130
    study = reader("ctrlc")
    parent = study.parents()[0]
    assert parent.info.status == "KILLED" and parent.data.tags["status"] == "interrupted"
    assert all(r.info.status != "RUNNING" for r in study.runs())
    interrupted = [t for name in CELLS for t in study.trials(name) if t.state == TrialState.FAIL]
    assert [t.user_attrs[FAIL_KIND] for t in interrupted] == ["interrupted"]
    assert sweep_main(["--sweep", str(sweep)]) == 0
    assert all(sum(is_counted(t) for t in study.trials(c)) == 2 for c in CELLS)
    parents = study.parents()
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["status"] == "completed"


def test_pareto_mode_returns_a_non_empty_pareto_set(write_sweep: SweepWriter, reader: Any) -> None:
    # one multi-objective study: every cell gets the same number of trials, the sampler picks the LR;
    # its Pareto trials are tagged in MLflow
    sweep = write_sweep(
        "front",
        mode="pareto",
        factors={"data.n_per_class": [4, 8]},
        search={"optimizer.lr": {"low": 1e-3, "high": 0.1, "log": True}},
        budget={"trials_per_cell": 2},
        sampler={"name": "nsgaii", "seed": 1},
    )
    assert sweep_main(["--sweep", str(sweep)]) == 0
    study = reader("front")
    trials = study.trials("pareto")
    assert len(trials) == 4 and all(len(t.values or []) == 2 for t in trials)
    assert Counter(t.params["data.n_per_class"] for t in trials) == {4: 2, 8: 2}
    assert len({t.params["optimizer.lr"] for t in trials}) == 4  # sampled, not fixed
    tagged = [r for r in study.children() if r.data.tags.get("pareto") == "true"]
    assert tagged and all(r.info.status == "FINISHED" for r in tagged)
    assert study.parents()[0].info.status == "FINISHED"


def test_an_unusable_tracking_store_stops_the_sweep_and_closes_its_runs(
    write_sweep: SweepWriter, reader: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # nothing can be recorded: the sweep stops with the error, leaving no run RUNNING
    def unusable(cfg: Any, *, callbacks: Any = ()) -> Any:
        raise TrackingError("MLflow tracking store is not usable")

    monkeypatch.setattr("tlbench.sweep.worker.train", unusable)
    with pytest.raises(TrackingError):
        sweep_main(["--sweep", str(write_sweep("down", **TWO_CELLS))])
    study = reader("down")
    assert study.parents()[0].info.status == "KILLED"
    assert all(r.info.status != "RUNNING" for r in study.runs())
    assert [t.user_attrs[FAIL_KIND] for t in study.trials(CELLS[0])] == ["error"]


def test_a_collapsed_trial_is_a_counted_failure_and_never_selected(
    write_sweep: SweepWriter, reader: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the trial reports status "failed: collapsed: ..." with the best val/acc of the cell: it counts
    # toward the budget as a failed configuration (kind "collapsed"), and the finals use the other trial
    def collapsing(cfg: Any, *, callbacks: Any = ()) -> Any:
        if cfg.optimizer.lr > 0.05 and cfg.seed == 0:
            reason = "val/acc 0.26 is within noise of chance (0.25)"
            metrics = {names.VAL_ACC: 0.99, names.TEST_ACC: 0.99, names.DEVICE_HOURS: 1e-5}
            return TrialResult(
                status=names.COLLAPSED_PREFIX + reason, metrics=metrics, params={}, tags={}, run_id=None
            )
        return real_train(cfg, callbacks=callbacks)

    monkeypatch.setattr("tlbench.sweep.worker.train", collapsing)
    sweep = write_sweep(
        "collapse",
        **{**TWO_CELLS, "search": {"optimizer.lr": {"choices": [0.001, 0.5]}}, "sampler": {"name": "grid"},
           "final": {"seeds": [1]}},
    )  # fmt: skip
    assert sweep_main(["--sweep", str(sweep)]) == 0
    study = reader("collapse")
    for cell in CELLS:
        trials = study.trials(cell)
        collapsed = [t for t in trials if t.state == TrialState.FAIL]
        assert len(collapsed) == 1 and collapsed[0].params["optimizer.lr"] == 0.5
        assert collapsed[0].user_attrs[FAIL_KIND] == COLLAPSED
        assert collapsed[0].user_attrs[FAIL_REASON].startswith("collapsed: val/acc 0.26")
        assert sum(is_counted(t) for t in trials) == 2  # counted: no third trial was run
        best = best_trial(trials)
        assert best is not None and best.params["optimizer.lr"] == 0.001  # never the collapsed one
    finals = study.trials("final")
    assert len(finals) == 2 and all(t.params["optimizer.lr"] == 0.001 for t in finals)
