"""Step 6 of a trial: what it logs, the tracking contract's params, tags and metrics."""

from __future__ import annotations

import platform
from typing import Any

import torch

import tlbench
from tlbench.config.schema import RunConfig
from tlbench.cost.accounting import TrialCost
from tlbench.cost.threads import ThreadPlan
from tlbench.models.freeze import count_parameters
from tlbench.strategies import PROBE_PHASE
from tlbench.tracking import names as N
from tlbench.training.compiled import off_reason
from tlbench.training.evaluate import TrialEvaluation
from tlbench.training.fit import FitOutcome
from tlbench.training.prepare import PreparedTrial

# A pruned trial did what the protocol asked (tag status=pruned tells it apart); KILLED means only
# "interrupted"; anything else ("failed: …", "failed: collapsed: …") is FAILED.
MLFLOW_STATUS = {N.COMPLETED: "FINISHED", N.PRUNED: "FINISHED"}


def mlflow_status(status: str, *, interrupted: bool = False) -> str:
    """The MLflow run status of a trial status (``interrupted``: Ctrl-C, whatever the status says)."""
    return "KILLED" if interrupted else MLFLOW_STATUS.get(status, "FAILED")


def trial_params(prepared: PreparedTrial) -> dict[str, Any]:
    cfg: RunConfig = prepared.cfg
    model, splits = prepared.model, prepared.splits
    probe = next((p for p in model.phases if p.name == PROBE_PHASE), None)
    return {
        # the tracking contract
        "strategy": cfg.strategy.name.value,
        "backbone": cfg.backbone.name,
        "weights": model.weights.value,
        "freeze_depth": model.freeze_depth,
        "n_per_class": cfg.data.n_per_class if cfg.data.n_per_class is not None else "all",
        "lr": cfg.optimizer.lr,
        "schedule": cfg.schedule.name.value,
        "seed": cfg.seed,
        "dataset": cfg.data.name.value,
        "resolution": cfg.data.resolution,
        "epochs": 0 if not model.phases else sum(p.epochs for p in model.phases),
        # the rest of what makes the result reproducible
        "freeze_groups": model.groups.depth,
        "probe_solver": (probe.solver if probe is not None else ""),
        "min_steps": cfg.trainer.min_steps or "",
        "val_every_n_epochs": cfg.trainer.val_every_n_epochs,
        "head": cfg.strategy.head.type.value,
        "optimizer": cfg.optimizer.name.value,
        "weight_decay": cfg.optimizer.weight_decay,
        "backbone_lr_mult": cfg.optimizer.backbone_lr_mult,
        "layer_decay": cfg.optimizer.layer_decay,
        "batch_size": cfg.trainer.batch_size,
        "precision": prepared.precision,
        "augment": cfg.data.augment,
        "split_seed": cfg.data.split_seed,
        "data_root": cfg.data.root or "",
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "n_test": len(splits.test),
        "n_classes": splits.num_classes,
        "data_fingerprint": splits.fingerprint,
    }


def trial_tags(prepared: PreparedTrial, threads: ThreadPlan) -> dict[str, str]:
    device = prepared.device
    return {
        "threads": str(threads.threads),  # torch intra-op threads (cost/device_hours divides by them)
        "threads_reason": threads.reason,
        "device": device.name,
        "device_count": str(device.count),
        "device_model": device.model,
        "strategy": prepared.cfg.strategy.name.value,
        "n_per_class": str(
            prepared.cfg.data.n_per_class if prepared.cfg.data.n_per_class is not None else "all"
        ),
        "channels_last": str(prepared.channels_last).lower(),
        "tlbench_version": tlbench.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        **prepared.cfg.tags,
    }


def trial_metrics(
    prepared: PreparedTrial, outcome: FitOutcome, evaluation: TrialEvaluation, cost: TrialCost
) -> dict[str, float]:
    """The final metrics: parameters, the probe's fit, the last training loss, val/test, cost."""
    trainable, total = count_parameters(prepared.model.network)
    metrics: dict[str, float] = {"params/trainable": float(trainable), "params/total": float(total)}
    probe = outcome.probe
    if probe is not None:
        metrics.update(
            {
                "probe/l2": probe.l2,
                "probe/val_acc": probe.val_acc,
                "probe/iterations": float(probe.iterations),
                "probe/evaluations": float(probe.evaluations),
                "probe/converged": float(probe.converged),
            }
        )
    history = outcome.progress.history
    if history:
        metrics["train/loss"] = history[-1].train_loss
    if prepared.model.loop_phases:  # the loop's optimizer steps (an L-BFGS probe has none to count)
        metrics[N.TRAIN_STEPS] = float(outcome.progress.steps)
    if evaluation.best_step is not None:  # early stopping: the step whose weights were evaluated
        metrics[N.BEST_STEP] = float(evaluation.best_step)
    if outcome.compile is not None:  # inside cost/fit_seconds (the fit's timer), shown apart
        metrics["cost/compile_seconds"] = outcome.compile.compile_seconds
    metrics.update(evaluation.metrics)
    metrics.update(cost.metrics())
    return metrics


def outcome_tags(
    prepared: PreparedTrial, outcome: FitOutcome, flops_check: str | None, *, cost: TrialCost
) -> dict[str, str]:
    """The tags that explain the metrics: status, how cost, memory and inputs were measured and produced."""
    tags = {N.STATUS: outcome.status, "memory_kind": outcome.memory_kind, N.DEVICE_HOURS_RULE: cost.rule}
    if outcome.inputs is not None:
        tags["feature_cache"] = outcome.inputs.cache.status
        tags["feature_cache_reason"] = outcome.inputs.cache.reason or prepared.cache_reason
    if flops_check is not None:
        tags["flops_check"] = flops_check
    if outcome.compile is not None:
        tags["compile"] = "on" if outcome.compile.compiled else "off"
        tags["compile_reason"] = outcome.compile.reason
    elif prepared.model.loop_phases:
        reason = off_reason(prepared.cfg.trainer, device_kind=prepared.device.kind)
        tags["compile"], tags["compile_reason"] = "off", reason or ""
    return tags
