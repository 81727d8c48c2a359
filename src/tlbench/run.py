"""``train(cfg)``: one trial, from a typed config to tracked metrics.

threads -> prepare (data, model, device; user errors surface here) -> MLflow run -> inputs
(frozen-prefix features) and fit, timed together -> evaluate (the weights early stopping chose, val,
then test, and the collapse check) -> cost -> record. Each step is a module of
:mod:`tlbench.training` that imports only the steps before it. Pruned and failed trials still log
the compute they spent; an interrupted trial's run is ended as KILLED before the interrupt
propagates; a collapsed trial (at chance, or its training loss rising) ends ``failed: collapsed: …``
with its val/test metrics logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from lightning.pytorch.callbacks import Callback

from tlbench.config.schema import RunConfig, as_plain_dict
from tlbench.cost.threads import ThreadPlan, trial_threads
from tlbench.models.module import EpochRecord
from tlbench.redaction import redact_password
from tlbench.tracking import MetricBuffer, MlflowRun, check_reachable
from tlbench.tracking import names as N
from tlbench.training.costing import trial_cost_of
from tlbench.training.evaluate import evaluate_trial
from tlbench.training.fit import Fit
from tlbench.training.inputs import trial_inputs
from tlbench.training.prepare import PreparedTrial, prepare
from tlbench.training.record import mlflow_status, outcome_tags, trial_metrics, trial_params, trial_tags

log = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    """A trained network with what it needs to classify a photo as its trial's evaluation did.

    ``network`` maps normalised ``[N, 3, R, R]`` float batches to logits over ``class_names`` (eval mode,
    on the CPU, contiguous NCHW weights); :meth:`preprocess` turns images into such a batch exactly as
    the trial's data and evaluation did (decode, upright, shorter side to ``resolution``, centre
    square, then ``(x / 255 - mean) / std``).
    """

    network: Any  # torch.nn.Module (torch is not imported at this module's top)
    class_names: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resolution: int

    def preprocess(self, images: Sequence[bytes | Any]) -> Any:
        """Images -> float32 ``[N, 3, R, R]``; raises on undecodable data.

        Each image is encoded bytes (JPEG, PNG, ...: decoded exactly as a dataset file is) or a
        ``PIL.Image.Image`` (one straight from ``Image.open`` decodes exactly like its file; one already
        loaded skips libjpeg's downscaling while decoding, so its pixels can differ slightly).
        """
        import numpy as np
        import torch

        from tlbench.data import normalize
        from tlbench.data.decode import decode_bytes, decode_image

        pixels = np.stack(
            [
                decode_bytes(bytes(image), resolution=self.resolution)
                if isinstance(image, (bytes, bytearray))
                else decode_image(image, resolution=self.resolution)
                for image in images
            ]
        )
        return normalize(torch.from_numpy(pixels), mean=self.mean, std=self.std)


@dataclass
class TrialResult:
    status: str  # completed | pruned | failed: <reason> (failed: collapsed: <why> for a degenerate result)
    metrics: dict[str, float]
    params: dict[str, Any]
    tags: dict[str, str]
    run_id: str | None
    history: list[EpochRecord] = field(default_factory=list)
    test_predictions: list[int] = field(default_factory=list)  # per test image, in the split's order
    model: TrainedModel | None = None  # train(..., keep_model=True) of a trial trained to its end

    @property
    def completed(self) -> bool:
        return self.status == "completed"


def run_name(cfg: RunConfig) -> str:
    """``tracking.run_name``, else ``"<strategy> n=<n|all> seed=<seed>"``: never MLflow's random name,
    which comes from an RNG the trial has seeded (every single trial was once ``overjoyed-slug-911``)."""
    if cfg.tracking.run_name:
        return cfg.tracking.run_name
    n = cfg.data.n_per_class if cfg.data.n_per_class is not None else "all"
    return f"{cfg.strategy.name.value} n={n} seed={cfg.seed}"


def _start_run(
    cfg: RunConfig, prepared: PreparedTrial, params: dict[str, Any], threads: ThreadPlan
) -> MlflowRun | None:
    if not cfg.tracking.enabled:
        return None
    tags = {**trial_tags(prepared, threads), N.STATUS: "running"}
    run = MlflowRun.start(
        experiment=cfg.tracking.experiment,
        run_name=run_name(cfg),
        tracking_uri=cfg.tracking.tracking_uri,
        parent_run_id=cfg.tracking.parent_run_id,
        tags=tags,
        unique=cfg.tracking.parent_run_id is None,  # a sweep's run names are unique by construction
    )
    run.log_params(params)
    config = yaml.safe_dump(as_plain_dict(cfg), sort_keys=False)
    run.log_text(redact_password(config), "config.yaml")  # a tracking URI's password stays out of it
    return run


def _curve_logger(curve: MetricBuffer | None) -> Callable[[EpochRecord], None] | None:
    if curve is None:
        return None

    def log_epoch(record: EpochRecord) -> None:  # buffered: a write per 15 s, not per epoch
        curve.add(record.metrics(), step=record.epoch)

    return log_epoch


def train(cfg: RunConfig, *, callbacks: Sequence[Callback] = (), keep_model: bool = False) -> TrialResult:
    """Run one trial and return its metrics.

    Args:
        cfg: The trial's validated config.
        callbacks: Lightning callbacks (e.g. the sweep's pruner).
        keep_model: Return the trained network with its preprocessing (:class:`TrainedModel`) when
            the trial trained to its end (completed, or collapsed); otherwise ``model`` is None.
    """
    if cfg.tracking.enabled:
        check_reachable(cfg.tracking.tracking_uri)  # fail before any data is loaded or trained on
    threads = trial_threads(cfg.trainer.num_threads)
    prepared = prepare(cfg)
    cfg = prepared.cfg  # resolved: data.resolution and the epochs the step budget implies
    params = trial_params(prepared)
    run = _start_run(cfg, prepared, params, threads)
    curve = MetricBuffer(run) if run is not None and cfg.tracking.log_epoch_metrics else None
    try:
        fitting = Fit(prepared, callbacks=callbacks, on_epoch_end=_curve_logger(curve))
        with fitting:  # the timed fit phase: feature extraction is training work
            fitting.run(trial_inputs(prepared))
        outcome = fitting.outcome()
        evaluation = evaluate_trial(prepared, outcome)
        status = N.COLLAPSED_PREFIX + evaluation.collapse if evaluation.collapse else outcome.status
        cost, flops_check = trial_cost_of(prepared, outcome, eval_images=evaluation.eval_images)
        metrics = trial_metrics(prepared, outcome, evaluation, cost)
        tags = {**outcome_tags(prepared, outcome, flops_check, cost=cost), N.STATUS: status}
        if evaluation.collapse:
            tags.update({N.COLLAPSED: "true", N.COLLAPSE_REASON: evaluation.collapse})
            log.warning("trial collapsed: %s", evaluation.collapse)
        if curve is not None:
            curve.flush()  # the curve's last points, before the final values that may repeat them
        if run is not None:
            history = outcome.progress.history
            logged = history[-1].metrics() if history else {}  # already in the curve at this step
            run.log_metrics({k: v for k, v in metrics.items() if logged.get(k) != v}, step=len(history))
            run.set_tags(tags)
            if evaluation.predictions:
                run.log_text(_predictions_json(prepared, evaluation.predictions), PREDICTIONS_ARTIFACT)
            run.end(mlflow_status(status, interrupted=outcome.interrupted))
    except BaseException:
        if run is not None:
            run.set_tags({N.STATUS: "failed: error while recording"})
            run.end("FAILED")
        raise
    if outcome.interrupted:
        raise KeyboardInterrupt
    if outcome.error is not None:
        raise outcome.error
    log.info("trial %s: %s", status, {k: round(v, 4) for k, v in metrics.items() if "/acc" in k})
    trained_to_end = outcome.status == N.COMPLETED and outcome.inputs is not None
    return TrialResult(
        status=status,
        metrics=metrics,
        params=params,
        tags={**trial_tags(prepared, threads), **tags},
        run_id=run.run_id if run is not None else None,
        history=outcome.progress.history,
        test_predictions=evaluation.predictions,
        model=_trained_model(prepared) if keep_model and trained_to_end else None,
    )


def _trained_model(prepared: PreparedTrial) -> TrainedModel:
    """The trial's whole network (a cached-prefix trial trained the suffix in place), moved to the CPU."""
    import torch

    network = prepared.model.network.eval().to("cpu")
    network = network.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    return TrainedModel(
        network=network,
        class_names=list(prepared.splits.class_names),
        mean=prepared.model.mean,
        std=prepared.model.std,
        resolution=prepared.cfg.data.size,
    )


# Per-image test predictions of a completed trial: paired comparisons between strategies (the report).
PREDICTIONS_ARTIFACT = N.PREDICTIONS_ARTIFACT


def _predictions_json(prepared: PreparedTrial, predicted: list[int]) -> str:
    labels = [int(v) for v in prepared.splits.test.labels.tolist()]
    names = list(prepared.splits.class_names)
    return json.dumps({"labels": labels, "predicted": predicted, "class_names": names})
