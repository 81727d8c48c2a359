from __future__ import annotations

import math
import time
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from mlflow.tracking import MlflowClient

from tlbench.config import load_config
from tlbench.errors import TrackingError, TrialPruned
from tlbench.run import train

CONTRACT_PARAMS = {
    "strategy", "backbone", "weights", "freeze_depth", "n_per_class", "lr", "schedule", "seed", "dataset",
    "resolution", "epochs",
}  # fmt: skip
CONTRACT_METRICS = {
    "val/acc", "test/acc", "train/loss", "cost/device_hours", "cost/train_flops", "cost/fit_seconds",
    "cost/images_per_second", "params/trainable", "params/total",
}  # fmt: skip
QUICK = ["data=synthetic", "trainer=quick"]


def _run(uri: str, run_id: str) -> Any:
    return MlflowClient(uri).get_run(run_id)


def test_end_to_end_trial_is_tracked_per_contract(mlflow_uri: str) -> None:
    # a full fine-tune on synthetic data logs the contract's params, metrics, tags and the config
    # (trained long enough to beat chance: a trial at chance would end as failed: collapsed)
    result = train(load_config([*QUICK, "strategy=full_finetune", "data.n_per_class=20", "trainer.epochs=6"]))
    assert result.status == "completed" and result.run_id
    run = _run(mlflow_uri, result.run_id)
    assert set(run.data.params) >= CONTRACT_PARAMS
    assert set(run.data.metrics) >= CONTRACT_METRICS
    assert run.data.tags["status"] == "completed"
    assert run.data.tags["device"] == "cpu" and run.data.tags["device_count"] == "1"
    assert run.info.status == "FINISHED"
    assert run.data.params["n_per_class"] == "20" and run.data.params["strategy"] == "full_finetune"
    m = run.data.metrics
    # on a CPU: process CPU seconds / torch threads (the rule is stated in a tag); the wall clock apart
    threads = int(run.data.tags["threads"])
    assert m["cost/device_hours"] == pytest.approx(m["cost/fit_cpu_seconds"] / threads / 3600)
    assert (
        run.data.tags["device_hours_rule"]
        == f"cpu: process CPU seconds of the fit / {threads} torch thread(s) / 3600"
    )
    assert m["cost/fit_seconds"] > 0 and run.data.tags["threads_reason"]
    assert m["cost/train_flops"] > 0 and m["params/trainable"] == m["params/total"]
    assert 0.0 <= m["test/acc"] <= 1.0
    # the per-epoch curve is logged with steps
    history = MlflowClient(mlflow_uri).get_metric_history(result.run_id, "val/acc")
    assert [h.step for h in history] == [1, 2, 3, 4, 5, 6]
    artifacts = [a.path for a in MlflowClient(mlflow_uri).list_artifacts(result.run_id)]
    assert "config.yaml" in artifacts


def test_linear_probe_flops_are_a_fraction_of_full_finetune(mlflow_uri: str) -> None:
    # freezing shows in the cost: same data and epochs, far fewer training FLOPs for the probe
    probe = train(
        load_config([*QUICK, "strategy=linear_probe", "strategy.probe.solver=sgd", "tracking=disabled"])
    )
    full = train(load_config([*QUICK, "strategy=full_finetune", "tracking=disabled"]))
    assert probe.metrics["cost/train_samples"] == full.metrics["cost/train_samples"]
    assert probe.metrics["cost/train_flops"] < 0.5 * full.metrics["cost/train_flops"]


def test_as_is_costs_nothing_to_train(mlflow_uri: str) -> None:
    # the pretrained classifier used as-is: zero fit time, zero training FLOPs, evaluated on val and test
    overrides = [
        *QUICK, "strategy=as_is",
        "strategy.class_map={pattern_0: [ant], pattern_1: [bee], pattern_2: ['0'], pattern_3: [n01440764]}",
    ]  # fmt: skip
    result = train(load_config(overrides))
    assert result.status == "completed"
    assert result.metrics["cost/fit_seconds"] == 0 and result.metrics["cost/train_flops"] == 0
    assert result.metrics["params/trainable"] == 0
    assert "test/acc" in result.metrics and "val/acc" in result.metrics


class _PoisonWeights(Callback):
    """Turns the trainable weights into NaN at the second step: the loss diverges."""

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == 1:
            with torch.no_grad():
                for p in pl_module.parameters():
                    if p.requires_grad:
                        p.fill_(math.nan)


def test_diverging_trial_is_recorded_as_failed_with_its_cost(mlflow_uri: str) -> None:
    # NaN loss ends the trial as failed with the reason; the compute spent is still logged
    result = train(
        load_config([*QUICK, "strategy=linear_probe", "strategy.probe.solver=sgd"]),
        callbacks=[_PoisonWeights()],
    )
    assert result.status.startswith("failed: diverged")
    run = _run(mlflow_uri, result.run_id or "")
    assert run.info.status == "FAILED" and run.data.tags["status"].startswith("failed: diverged")
    assert run.data.metrics["cost/fit_seconds"] > 0 and run.data.metrics["cost/train_flops"] > 0
    assert "test/acc" not in run.data.metrics


class _PruneAfterFirstEpoch(Callback):
    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        raise TrialPruned(epoch=trainer.current_epoch + 1)


def test_pruned_trial_keeps_its_cost(mlflow_uri: str) -> None:
    # a pruned trial reports pruned, keeps its cost and its last val/acc, and gets no test number
    result = train(
        load_config([*QUICK, "strategy=linear_probe", "strategy.probe.solver=sgd"]),
        callbacks=[_PruneAfterFirstEpoch()],
    )
    assert result.status == "pruned"
    run = _run(mlflow_uri, result.run_id or "")
    # pruned is a normal end under the protocol: FINISHED in MLflow, told apart by its status tag
    assert run.data.tags["status"] == "pruned" and run.info.status == "FINISHED"
    assert run.data.metrics["cost/train_flops"] > 0
    assert "test/acc" not in run.data.metrics


def test_same_seed_same_result() -> None:
    # determinism on the CPU: the same config and seed give the same test accuracy and loss
    cfg = load_config([*QUICK, "strategy=full_finetune", "tracking=disabled", "seed=3"])
    first, second = train(cfg), train(cfg)
    assert first.metrics["test/acc"] == second.metrics["test/acc"]
    assert first.metrics["test/loss"] == pytest.approx(second.metrics["test/loss"], rel=1e-6)


def test_unreachable_tracking_server_fails_before_training() -> None:
    # a dead MLflow server is reported up front, in one line, within seconds, before any data is loaded
    cfg = load_config([*QUICK, "tracking.tracking_uri=http://127.0.0.1:9"])
    start = time.perf_counter()
    with pytest.raises(TrackingError, match="not usable"):
        train(cfg)
    assert time.perf_counter() - start < 60  # a quick probe, not minutes of client retries


class _Interrupt(Callback):
    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        raise KeyboardInterrupt


def test_interrupted_trial_is_killed_and_reraised(mlflow_uri: str) -> None:
    # Ctrl-C: the run ends KILLED (not FAILED: nothing is wrong with the configuration), then propagates
    with pytest.raises(KeyboardInterrupt):
        train(load_config([*QUICK, "strategy=scratch"]), callbacks=[_Interrupt()])
    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tlbench").experiment_id])
    assert run.info.status == "KILLED" and run.data.tags["status"] == "failed: interrupted"


def test_single_trials_are_named_from_their_config_never_randomly(mlflow_uri: str) -> None:
    # three single trials: three readable names; the seed no longer picks MLflow's random name
    names = []
    for overrides in (
        ["strategy=scratch", "seed=1"],
        ["strategy=scratch", "seed=2"],
        ["strategy=full_finetune"],
    ):
        result = train(load_config([*QUICK, "data.n_per_class=5", "trainer.epochs=1", *overrides]))
        names.append(_run(mlflow_uri, result.run_id or "").info.run_name)
    assert names == ["scratch n=5 seed=1", "scratch n=5 seed=2", "full_finetune n=5 seed=0"]
    # an explicit name (the sweep's) is kept
    named = train(load_config([*QUICK, "trainer.epochs=1", "tracking.run_name=mine"]))
    assert _run(mlflow_uri, named.run_id or "").info.run_name == "mine"
