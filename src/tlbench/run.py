"""``train(cfg)``: one trial, from a typed config to tracked metrics.

prepare (data, model, device; user errors surface here) -> MLflow run -> fit (timed) ->
evaluate (val, then test) -> cost -> log. Pruned and failed trials still log the compute they
spent; an interrupted trial's run is ended as KILLED before the interrupt propagates.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from lightning.pytorch.callbacks import Callback

from tlbench.config.schema import RunConfig, as_plain_dict
from tlbench.cost.accounting import trial_cost
from tlbench.models.freeze import count_parameters
from tlbench.models.module import EpochRecord
from tlbench.tracking import MlflowRun, check_reachable
from tlbench.training.costing import (
    eval_images,
    forward_flops_per_sample,
    phase_work,
    train_step_flops_per_sample,
)
from tlbench.training.evaluate import evaluate
from tlbench.training.fit import FitOutcome, fit
from tlbench.training.prepare import PreparedTrial, prepare
from tlbench.training.record import mlflow_status, trial_params, trial_tags

log = logging.getLogger(__name__)


@dataclass
class TrialResult:
    status: str  # completed | pruned | failed: <reason>
    metrics: dict[str, float]
    params: dict[str, Any]
    tags: dict[str, str]
    run_id: str | None
    history: list[EpochRecord] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        return self.status == "completed"


def _start_run(cfg: RunConfig, prepared: PreparedTrial, params: dict[str, Any]) -> MlflowRun | None:
    if not cfg.tracking.enabled:
        return None
    tags = {**trial_tags(prepared), "status": "running"}
    run = MlflowRun.start(
        experiment=cfg.tracking.experiment,
        run_name=cfg.tracking.run_name,
        tracking_uri=cfg.tracking.tracking_uri,
        parent_run_id=cfg.tracking.parent_run_id,
        tags=tags,
    )
    run.log_params(params)
    run.log_text(yaml.safe_dump(as_plain_dict(cfg), sort_keys=False), "config.yaml")
    return run


def _fit_or_skip(prepared: PreparedTrial, callbacks: Sequence[Callback], run: MlflowRun | None) -> FitOutcome:
    if prepared.model.phases:
        log_epoch = None
        if run is not None and prepared.cfg.tracking.log_epoch_metrics:

            def log_epoch(record: EpochRecord) -> None:  # one batched write per epoch
                run.log_metrics(record.metrics(), step=record.epoch)

        return fit(prepared, callbacks=callbacks, on_epoch_end=log_epoch)
    from tlbench.models.module import FitProgress

    # as_is: nothing is trained; zero training cost by construction.
    return FitOutcome(
        "completed", FitProgress(phase_samples=[]), seconds=0.0, peak_mb=0.0, memory_kind="none"
    )


def train(cfg: RunConfig, *, callbacks: Sequence[Callback] = ()) -> TrialResult:
    """Run one trial and return its metrics; ``callbacks`` (e.g. a pruner) are passed to Lightning."""
    if cfg.tracking.enabled:
        check_reachable(cfg.tracking.tracking_uri)  # fail before any data is loaded or trained on
    prepared = prepare(cfg)
    log.info("%s", prepared.splits.description)
    params = trial_params(prepared)
    train_flops = train_step_flops_per_sample(prepared)
    forward_flops = forward_flops_per_sample(prepared)
    run = _start_run(cfg, prepared, params)
    try:
        outcome = _fit_or_skip(prepared, callbacks, run)
        metrics = _metrics(prepared, outcome, train_flops, forward_flops)
        tags = {"status": outcome.status, "memory_kind": outcome.memory_kind}
        if run is not None:
            history = outcome.progress.history
            logged = history[-1].metrics() if history else {}  # already in the curve at this step
            run.log_metrics({k: v for k, v in metrics.items() if logged.get(k) != v}, step=len(history))
            run.set_tags(tags)
            run.end(mlflow_status(outcome.status))
    except BaseException:
        if run is not None:
            run.set_tags({"status": "failed: error while recording"})
            run.end("FAILED")
        raise
    if outcome.interrupted:
        raise KeyboardInterrupt
    if outcome.error is not None:
        raise outcome.error
    log.info("trial %s: %s", outcome.status, {k: round(v, 4) for k, v in metrics.items() if "/acc" in k})
    return TrialResult(
        status=outcome.status,
        metrics=metrics,
        params=params,
        tags={**trial_tags(prepared), **tags},
        run_id=run.run_id if run is not None else None,
        history=outcome.progress.history,
    )


def _metrics(
    prepared: PreparedTrial, outcome: FitOutcome, train_flops: list[float], forward_flops: float
) -> dict[str, float]:
    splits, device = prepared.splits, prepared.device
    trainable, total = count_parameters(prepared.model.network)
    history = outcome.progress.history
    metrics: dict[str, float] = {"params/trainable": float(trainable), "params/total": float(total)}
    if history:
        metrics["train/loss"] = history[-1].train_loss
    final_val_pass = False
    if outcome.status == "completed":
        last = history[-1] if history else None
        if last is not None and last.val_acc is not None and last.val_loss is not None:
            metrics["val/acc"], metrics["val/loss"] = last.val_acc, last.val_loss
        else:
            final_val_pass = True
            val = evaluate(
                prepared.model.network,
                prepared.loader(splits.val, train=False),
                device_type=device.kind,
                precision=prepared.precision,
            )
            metrics["val/acc"], metrics["val/loss"] = val.accuracy, val.loss
        test = evaluate(
            prepared.model.network,
            prepared.loader(splits.test, train=False),
            device_type=device.kind,
            precision=prepared.precision,
        )
        metrics["test/acc"], metrics["test/loss"] = test.accuracy, test.loss
    else:
        seen = [r for r in history if r.val_acc is not None]
        if seen:
            metrics["val/acc"] = seen[-1].val_acc or 0.0  # the last validation before it stopped
    n_test = len(splits.test) if outcome.status == "completed" else 0
    cost = trial_cost(
        fit_seconds=outcome.seconds,
        phases=phase_work(prepared, outcome.progress.phase_samples, train_flops),
        extraction_flops=0.0,
        eval_flops=forward_flops
        * eval_images(history, n_val=len(splits.val), n_test=n_test, final_val_pass=final_val_pass),
        peak_memory_mb=outcome.peak_mb,
        memory_kind=outcome.memory_kind,
        device=device,
    )
    metrics.update(cost.metrics())
    return metrics
