"""``train(cfg)``: one trial, from a typed config to tracked metrics.

prepare (data, model, device; user errors surface here) -> MLflow run -> fit (timed) ->
evaluate (val, then test) -> cost -> log. Pruned and failed trials still log the compute they
spent; an interrupted trial's run is ended as KILLED before the interrupt propagates.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from lightning.pytorch.callbacks import Callback

from tlbench.config.schema import RunConfig, as_plain_dict
from tlbench.cost.accounting import TrialCost, trial_cost
from tlbench.models.freeze import count_parameters
from tlbench.models.module import EpochRecord, FitProgress
from tlbench.redaction import redact_password
from tlbench.tracking import MetricBuffer, MlflowRun, check_reachable
from tlbench.training.costing import FlopProfile, eval_images, flop_profile, phase_work
from tlbench.training.evaluate import evaluate
from tlbench.training.fit import FitOutcome, fit
from tlbench.training.inputs import TrialInputs, image_inputs
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
    test_predictions: list[int] = field(default_factory=list)  # per test image, in the split's order

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
    config = yaml.safe_dump(as_plain_dict(cfg), sort_keys=False)
    run.log_text(redact_password(config), "config.yaml")  # a tracking URI's password stays out of it
    return run


def _fit_or_skip(
    prepared: PreparedTrial, callbacks: Sequence[Callback], curve: MetricBuffer | None
) -> FitOutcome:
    if prepared.model.phases:
        log_epoch = None
        if curve is not None:

            def log_epoch(record: EpochRecord) -> None:  # buffered: a write per 15 s, not per epoch
                curve.add(record.metrics(), step=record.epoch)

        return fit(prepared, callbacks=callbacks, on_epoch_end=log_epoch)
    # as_is: nothing is trained; zero training cost by construction.
    return FitOutcome(
        "completed",
        FitProgress(phase_samples=[]),
        seconds=0.0,
        peak_mb=0.0,
        memory_kind="none",
        inputs=image_inputs(prepared, "not cacheable: no training"),
    )


def train(cfg: RunConfig, *, callbacks: Sequence[Callback] = ()) -> TrialResult:
    """Run one trial and return its metrics; ``callbacks`` (e.g. a pruner) are passed to Lightning."""
    if cfg.tracking.enabled:
        check_reachable(cfg.tracking.tracking_uri)  # fail before any data is loaded or trained on
    prepared = prepare(cfg)
    cfg = prepared.cfg  # resolved: data.resolution and the epochs the step budget implies
    params = trial_params(prepared)
    run = _start_run(cfg, prepared, params)
    curve = MetricBuffer(run) if run is not None and cfg.tracking.log_epoch_metrics else None
    predictions: list[int] = []
    try:
        outcome = _fit_or_skip(prepared, callbacks, curve)
        metrics, tags = _results(prepared, outcome, predictions)
        if curve is not None:
            curve.flush()  # the curve's last points, before the final values that may repeat them
        if run is not None:
            history = outcome.progress.history
            logged = history[-1].metrics() if history else {}  # already in the curve at this step
            run.log_metrics({k: v for k, v in metrics.items() if logged.get(k) != v}, step=len(history))
            run.set_tags(tags)
            if predictions:
                run.log_text(_predictions_json(prepared, predictions), PREDICTIONS_ARTIFACT)
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
        test_predictions=predictions,
    )


# Per-image test predictions of a completed trial: paired comparisons between strategies (the report).
PREDICTIONS_ARTIFACT = "predictions/test.json"


def _predictions_json(prepared: PreparedTrial, predicted: list[int]) -> str:
    labels = [int(v) for v in prepared.splits.test.labels.tolist()]
    names = list(prepared.splits.class_names)
    return json.dumps({"labels": labels, "predicted": predicted, "class_names": names})


def _probe_metrics(outcome: FitOutcome) -> dict[str, float]:
    probe = outcome.probe
    if probe is None:
        return {}
    return {
        "probe/l2": probe.l2,
        "probe/val_acc": probe.val_acc,
        "probe/iterations": float(probe.iterations),
        "probe/evaluations": float(probe.evaluations),
        "probe/converged": float(probe.converged),
    }


def _results(
    prepared: PreparedTrial, outcome: FitOutcome, predictions: list[int]
) -> tuple[dict[str, float], dict[str, str]]:
    """Final metrics (evaluation on the trial's inputs, cost) and the tags that explain them."""
    trainable, total = count_parameters(prepared.model.network)
    history = outcome.progress.history
    metrics: dict[str, float] = {"params/trainable": float(trainable), "params/total": float(total)}
    metrics.update(_probe_metrics(outcome))
    tags = {"status": outcome.status, "memory_kind": outcome.memory_kind}
    if outcome.compile is not None:
        tags["compile"] = "on" if outcome.compile.compiled else "off"
        tags["compile_reason"] = outcome.compile.reason
        metrics["cost/compile_seconds"] = outcome.compile.compile_seconds
    elif prepared.model.loop_phases:
        tags["compile"], tags["compile_reason"] = "off", "trainer.compile=false"
    if history:
        metrics["train/loss"] = history[-1].train_loss
    inputs = outcome.inputs
    if inputs is None:  # failed before any input existed: only the time spent is known
        metrics.update(_cost(prepared, outcome, None, None, eval_count=0).metrics())
        return metrics, tags
    tags["feature_cache"] = inputs.cache.status
    tags["feature_cache_reason"] = inputs.cache.reason or prepared.cache_reason
    final_val_pass = False
    if outcome.status == "completed":
        final_val_pass = _evaluate(prepared, inputs, history, metrics, predictions)
    elif any(r.val_acc is not None for r in history):
        metrics["val/acc"] = [r.val_acc for r in history if r.val_acc is not None][-1] or 0.0
    profile = flop_profile(prepared, inputs) if prepared.cfg.trainer.count_flops else None
    if profile is not None:
        tags["flops_check"] = profile.check
    n_test = len(prepared.splits.test) if outcome.status == "completed" else 0
    # The probe's validation (epoch 0) ran on extracted features, already counted as extraction.
    loop_history = [r for r in history if r.epoch > 0]
    eval_count = eval_images(
        loop_history, n_val=len(prepared.splits.val), n_test=n_test, final_val_pass=final_val_pass
    )
    metrics.update(_cost(prepared, outcome, inputs, profile, eval_count=eval_count).metrics())
    return metrics, tags


def _evaluate(
    prepared: PreparedTrial,
    inputs: TrialInputs,
    history: list[EpochRecord],
    metrics: dict[str, float],
    predictions: list[int],
) -> bool:
    """val (reusing the last epoch's validation when it ran) and test (its per-image predictions
    into ``predictions``); True if val was re-run."""
    cfg, device = prepared.cfg, prepared.device
    last = history[-1] if history else None
    rerun = last is None or last.val_acc is None or last.val_loss is None
    if last is not None and not rerun:
        metrics["val/acc"], metrics["val/loss"] = last.val_acc or 0.0, last.val_loss or 0.0
    for split in ("val", "test") if rerun else ("test",):
        loader = inputs.loader(split, batch_size=cfg.trainer.eval_batch_size, seed=cfg.seed)
        result = evaluate(inputs.network, loader, device_type=device.kind, precision=prepared.precision)
        metrics[f"{split}/acc"], metrics[f"{split}/loss"] = result.accuracy, result.loss
        if split == "test":
            predictions[:] = result.predicted
    return rerun


def _cost(
    prepared: PreparedTrial,
    outcome: FitOutcome,
    inputs: TrialInputs | None,
    profile: FlopProfile | None,
    *,
    eval_count: int,
) -> TrialCost:
    cache = inputs.cache if inputs is not None else None
    steps = list(profile.step_per_sample) if profile else [0.0 for _ in prepared.model.phases]
    if outcome.probe is not None:  # each L-BFGS objective evaluation is a full pass over the features
        steps[0] *= outcome.probe.evaluations
    computed = cache.computed_flops if cache else {}
    reused = cache.reused_flops if cache else {}
    return trial_cost(
        fit_seconds=outcome.seconds,
        phases=phase_work(prepared, outcome.progress.phase_samples, steps),
        extraction_flops=computed.get("train", 0.0),
        eval_flops=(profile.forward_per_sample * eval_count if profile else 0.0)
        + computed.get("val", 0.0)
        + computed.get("test", 0.0),
        reused_extraction_flops=reused.get("train", 0.0),
        reused_extraction_seconds=cache.reused_seconds if cache else 0.0,
        flops_counted=profile is not None,
        peak_memory_mb=outcome.peak_mb,
        memory_kind=outcome.memory_kind,
        device=prepared.device,
    )
