"""A study written straight into an MLflow store with the sweep driver's layout, with known numbers.

Layout (the contract the sweep driver follows): experiment = study, tagged ``tlbench.study``; one
parent run ``study:<name>`` (``role=study``, ``sweep.yaml``); one child run per trial with the trial's
tags, params and metrics (test metrics only for completed trials; per-epoch history with step=epoch).
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

SWEEP_YAML = "name: smoke\nfactors:\n  strategy: [linear_probe, full_finetune, scratch, partial]\nseeds: 3\n"


@dataclass(frozen=True)
class FakeTrial:
    role: str  # tune | final
    strategy: str
    n_per_class: str
    trial_number: int = 0
    seed: int = 0
    lr: float = 1e-3
    freeze_depth: int = 0
    status: str = "completed"  # completed | pruned | failed: <reason> | running
    val_acc: float | None = 0.5
    test_acc: float | None = 0.5
    device_hours: float = 0.001
    train_flops: float = 1e12
    trainable: float = 1000.0
    device: str = "cpu"
    predictions: bool = True  # completed final runs log predictions/test.json (older studies did not)
    tuned_from: int = 0  # a final run: the tuning trial (in its cell) its configuration came from
    steps: int | None = None  # train/steps, when given
    overrides: tuple[str, ...] | None = None  # the run's Hydra overrides (tag, JSON list), when given
    config: str | None = None  # a config.yaml artifact, when given
    extra_tags: tuple[tuple[str, str], ...] = ()


N_TEST, N_CLASSES = 400, 10


def fake_predictions(t: FakeTrial, *, n_test: int = N_TEST) -> dict[str, list[Any]]:
    """Per-image test predictions whose accuracy is exactly ``t.test_acc`` (rounded to whole images).

    Images have a difficulty shared by every run (image ``j`` is harder the larger ``j``), plus noise of
    the run's own (seeded by strategy and seed): the runs of a study are correlated on the same images,
    as real ones are. The hardest ones by score are predicted wrong (as the next class).
    """
    labels = [j % N_CLASSES for j in range(n_test)]
    rng = np.random.default_rng([zlib.crc32(t.strategy.encode()), t.seed, zlib.crc32(t.n_per_class.encode())])
    score = np.arange(n_test) / n_test + rng.normal(0.0, 0.3, n_test)
    wrong = set(np.argsort(score)[round((t.test_acc or 0.0) * n_test) :].tolist())
    predicted = [(y + 1) % N_CLASSES if j in wrong else y for j, y in enumerate(labels)]
    return {"labels": labels, "predicted": predicted, "class_names": [str(c) for c in range(N_CLASSES)]}


def _trial(role: str, strategy: str, size: str, acc: float, **kw: Any) -> FakeTrial:
    kw.setdefault("val_acc", acc - 0.01)
    kw.setdefault("test_acc", acc)
    return FakeTrial(role=role, strategy=strategy, n_per_class=size, **kw)


def _seeds(
    strategy: str, size: str, accs: Sequence[float], cost: tuple[float, ...], **kw: Any
) -> list[FakeTrial]:
    """Final runs, one per seed; ``cost`` = (device-hours, train FLOPs, trainable params)."""
    hours, flops, trainable = cost
    kw.update(device_hours=hours, train_flops=flops, trainable=trainable)
    return [_trial("final", strategy, size, acc, seed=seed, **kw) for seed, acc in enumerate(accs)]


def standard_trials() -> list[FakeTrial]:
    """Four strategies × sizes 10 and all; final seeds with known accuracies and costs.

    n=10: linear_probe 0.82 (0.001 h), full_finetune 0.825 (0.004 h), partial 0.82 over 2 seeds (a third
    final seed failed), scratch 0.40 from a single seed. all: linear_probe 0.90333, full_finetune 0.96,
    scratch 0.72; partial has no final run there (one pruned tuning trial only).
    """
    final = [
        *_seeds("linear_probe", "10", [0.80, 0.82, 0.84], (0.001, 1e12, 1e3)),
        *_seeds("full_finetune", "10", [0.82, 0.825, 0.83], (0.004, 3e12, 5e5)),
        *_seeds("partial", "10", [0.81, 0.83], (0.002, 2e12, 2e5), freeze_depth=2),
        _trial("final", "partial", "10", 0.0, seed=2, freeze_depth=2, device_hours=0.0005, val_acc=None,
               test_acc=None, status="failed: diverged (loss is NaN)"),
        *_seeds("scratch", "10", [0.40], (0.003, 3e12, 5e5)),
        *_seeds("linear_probe", "all", [0.90, 0.90, 0.91], (0.002, 5e12, 1e3)),
        *_seeds("full_finetune", "all", [0.95, 0.96, 0.97], (0.01, 15e12, 5e5)),
        *_seeds("scratch", "all", [0.70, 0.72, 0.74], (0.009, 15e12, 5e5)),
    ]  # fmt: skip
    # completed tuning trials log a test accuracy too (0.6 everywhere): the report must never use it
    tune = [
        _trial("tune", strategy, size, 0.6, val_acc=acc, lr=lr, device_hours=0.001)
        for strategy in ("linear_probe", "full_finetune", "scratch")
        for size in ("10", "all")
        for lr, acc in ((1e-3, 0.7), (1e-2, 0.8))
    ]
    tune += [
        _trial("tune", "partial", "10", 0.6, val_acc=acc, freeze_depth=k, device_hours=0.001 * (4 - k))
        for k, acc in ((1, 0.84), (2, 0.83), (3, 0.80))
    ]
    tune += [
        _trial("tune", "partial", "all", 0.0, val_acc=0.5, test_acc=None, freeze_depth=1, status="pruned"),
        _trial("tune", "scratch", "10", 0.0, val_acc=None, test_acc=None, status="failed: out of memory"),
    ]
    return [replace(t, trial_number=i) for i, t in enumerate(tune + final)]


def _params(t: FakeTrial) -> dict[str, str]:
    n_train = "500" if t.n_per_class == "all" else str(int(t.n_per_class) * 10)
    return {
        "strategy": t.strategy, "backbone": "tf_efficientnet_lite0", "weights": "embedded",
        "freeze_depth": str(t.freeze_depth), "n_per_class": t.n_per_class, "lr": str(t.lr),
        "schedule": "cosine", "seed": str(t.seed), "dataset": "digits", "resolution": "64", "epochs": "2",
        "freeze_groups": "6", "lp_epochs": "", "head": "linear", "optimizer": "adamw", "weight_decay": "0.05",
        "backbone_lr_mult": "1.0", "layer_decay": "1.0", "batch_size": "32", "precision": "32",
        "augment": "False", "split_seed": "0", "data_root": "", "n_train": n_train, "n_val": "200",
        "n_test": str(N_TEST), "n_classes": str(N_CLASSES),
        "data_fingerprint": f"{t.n_per_class}-{t.seed}",
    }  # fmt: skip


def _metrics(t: FakeTrial, now: int) -> list[Metric]:
    values: dict[str, float] = {
        "train/loss": 0.3, "cost/device_hours": t.device_hours, "cost/fit_seconds": t.device_hours * 3600,
        "cost/train_flops": t.train_flops, "cost/eval_flops": 1e10, "cost/train_samples": 200.0,
        "cost/images_per_second": 55.5, "cost/peak_memory_mb": 300.0, "params/trainable": t.trainable,
        "params/total": 5e5,
    }  # fmt: skip
    if t.val_acc is not None:
        values["val/acc"], values["val/loss"] = t.val_acc, 0.5
    if t.steps is not None:
        values["train/steps"] = float(t.steps)
    if t.status == "completed" and t.test_acc is not None:
        values["test/acc"], values["test/loss"] = t.test_acc, 0.4
    metrics = [Metric(k, v, now, 2) for k, v in values.items()]
    if t.val_acc is not None:  # a per-epoch curve whose last step is the final value
        metrics.append(Metric("val/acc", t.val_acc / 2, now, 1))
    return metrics


def build_study(
    uri: str,
    name: str = "smoke",
    trials: Sequence[FakeTrial] | None = None,
    *,
    with_parent: bool = True,
    artifacts: Path | None = None,
) -> dict[str, Any]:
    """Write the study; returns the experiment id, parent run id and the child run ids by trial number.

    ``artifacts``: where the experiment keeps artifacts (default: MLflow's, under the working directory).
    """
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(
        name,
        artifact_location=artifacts.as_uri() if artifacts else None,
        tags={"tlbench.study": name, "tlbench.sweep": name},
    )
    parent_id = None
    now = int(time.time() * 1000)
    if with_parent:
        parent = client.create_run(
            experiment_id,
            run_name=f"study:{name}",
            tags={"role": "study", "tlbench.study": name, "tlbench.sweep": name, "status": "completed"},
        )
        parent_id = parent.info.run_id
        summary = {
            "factors": "strategy,data.n_per_class",
            "budget": "2",
            "seeds": "3",
            "sampler": "TPESampler",
        }
        client.log_batch(parent_id, params=[Param(k, v) for k, v in summary.items()])
        client.log_text(parent_id, SWEEP_YAML, "sweep.yaml")
    run_ids: dict[int, str] = {}
    for t in trials if trials is not None else standard_trials():
        tags = {
            "role": t.role, "trial_number": str(t.trial_number), "optuna_study": name,
            "cell": f"data.n_per_class={t.n_per_class},strategy={t.strategy}", "tlbench.study": name,
            "status": t.status, "device": t.device, "device_count": "1", "device_model": "Test CPU",
            "strategy": t.strategy, "n_per_class": t.n_per_class, "tlbench_version": "0.1.0",
            "torch_version": "2.14.1", "python_version": "3.11.9",
        }  # fmt: skip
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id
        if t.role == "final":
            tags["tuned_from_trial"] = str(t.tuned_from)
        if t.overrides is not None:
            tags["overrides"] = json.dumps(list(t.overrides))
        tags.update(dict(t.extra_tags))
        run = client.create_run(experiment_id, run_name=f"trial-{t.trial_number}", tags=tags)
        run_id = run.info.run_id
        client.log_batch(
            run_id, metrics=_metrics(t, now), params=[Param(k, v) for k, v in _params(t).items()]
        )
        if t.role == "final" and t.status == "completed" and t.test_acc is not None and t.predictions:
            client.log_text(run_id, json.dumps(fake_predictions(t)), "predictions/test.json")
        if t.config is not None:
            client.log_text(run_id, t.config, "config.yaml")
        if t.status != "running":
            mlflow_status = {"completed": "FINISHED", "pruned": "KILLED"}.get(t.status, "FAILED")
            client.set_terminated(run_id, status=mlflow_status)
        run_ids[t.trial_number] = run_id
    if parent_id:
        client.set_terminated(parent_id)
    return {"experiment_id": experiment_id, "parent_run_id": parent_id, "run_ids": run_ids}
