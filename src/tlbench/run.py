"""``train(cfg)``: one trial, from a typed config to tracked metrics.

prepare (data, network, device, precision, deterministic, threads, resolved once; user errors surface
here) -> the input plan and the Trainer -> MLflow run -> inputs (frozen-prefix features), the probe and
the Lightning fit, timed together (:func:`tlbench.training.device.timed_fit` measures the fit's cost around
them) -> evaluate (the weights early stopping chose, val, then test, and the collapse check) -> metrics
and tags -> cost -> record. Each step gets the values it uses. Pruned and failed trials still log
the compute they spent; an interrupted trial's run is ended as KILLED before the interrupt
propagates; a collapsed trial (at chance, or its training loss rising) ends ``failed: collapsed: …``
with its val/test metrics logged.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback

from tlbench.config.schema import RunConfig
from tlbench.tracking import check_reachable
from tlbench.tracking import names as N
from tlbench.training.device import timed_fit
from tlbench.training.fit import (
    CompiledTraining,
    EpochRecord,
    ProbeFit,
    TransferModule,
    build_trainer,
    compile_callback,
    fit_probe,
    fit_progress,
    probe_record,
)
from tlbench.training.inputs import TrialInputs, feature_cache, plan_inputs, trial_inputs
from tlbench.training.network import BuiltModel, prepare
from tlbench.training.record import (
    evaluate_trial,
    flop_identity,
    mlflow_status,
    outcome_tags,
    start_run,
    trial_cost_of,
    trial_metrics,
    trial_params,
    trial_tags,
)

log = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    """A trained network (eval mode, on the CPU, contiguous NCHW weights: normalised ``[N, 3, R, R]``
    batches -> logits over ``class_names``) and :meth:`preprocess`, which makes such batches exactly as
    the trial did (decode, upright, shorter side to ``resolution``, centre square, normalise)."""

    network: Any  # torch.nn.Module (torch is not imported at this module's top)
    class_names: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resolution: int

    def preprocess(self, images: Sequence[bytes | Any]) -> Any:
        """Images (encoded bytes, or ``PIL.Image.Image``s) -> float32 ``[N, 3, R, R]``; raises on undecodable
        data. An image already loaded skips libjpeg's downscaling while decoding: its pixels can differ
        slightly from its file's."""
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


def train(cfg: RunConfig, *, callbacks: Sequence[Callback] = (), keep_model: bool = False) -> TrialResult:
    """Run one trial and return its metrics. ``callbacks``: Lightning's (e.g. the sweep's pruner);
    ``keep_model``: return the trained network with its preprocessing (:class:`TrainedModel`) when the
    trial trained to its end (completed, or collapsed)."""

    if cfg.tracking.enabled:
        check_reachable(cfg.tracking.tracking_uri)  # fail before any data is loaded or trained on
    # The data, the network and where they compute (cfg resolved: data.resolution, the budget's epochs).
    trial = prepare(cfg)
    cfg, splits, model, device = trial.cfg, trial.splits, trial.model, trial.device
    precision, channels_last = trial.precision, trial.channels_last
    plan = plan_inputs(cfg, model, splits, device=device, precision=precision, channels_last=channels_last)
    params = trial_params(cfg, model, splits, precision=precision)
    before = trial_tags(cfg, device, trial.threads, channels_last=channels_last)
    counted = cfg.trainer.count_flops  # the FLOP profile's memo key, when FLOPs are counted
    identity = (
        flop_identity(cfg, num_classes=splits.num_classes, cache_reason=plan.reason) if counted else None
    )
    validated = not splits.val_in_train  # data.train_on_val: nothing is validated
    # The Lightning Trainer, before the clock starts; none for a strategy without a loop phase.
    compiled: CompiledTraining | None = None
    eager: str | None = None  # why the loop trains eagerly whatever it measures (the compile_reason tag)
    trainer: Trainer | None = None
    if model.loop_phases:
        compiled, eager = compile_callback(cfg.trainer, device_kind=device.kind, input_side=cfg.data.size)
        trainer = build_trainer(
            device,
            cfg.trainer,
            precision=precision,
            deterministic=trial.deterministic,
            max_epochs=sum(p.epochs for p in model.loop_phases),
            validate=validated,
            callbacks=[*callbacks, *([compiled] if compiled is not None else [])],
        )
    run, curve = start_run(cfg, params, before)

    def log_epoch(record: EpochRecord) -> None:
        assert curve is not None
        curve.add(record.metrics(), step=record.epoch)

    on_epoch_end = log_epoch if curve is not None else None
    try:
        inputs: TrialInputs | None = None
        probe: ProbeFit | None = None
        probe_epoch: EpochRecord | None = None  # the probe's fit as epoch 0 of the history
        module: TransferModule | None = None
        with timed_fit(device, timed=bool(model.phases)) as outcome:  # extraction is training work
            cache = feature_cache(cfg.trainer) if cfg.trainer.cache_features else None
            inputs = trial_inputs(model, splits, plan, cache=cache)
            if model.phases and not model.phases[0].in_loop:  # its result replaces the head's weights
                assert inputs.features is not None  # plan_prefix_cache plans features for every probe
                features = inputs.features
                probe = fit_probe(model.network.head, features["train"], features["val"], cfg.strategy.probe)
                seconds = time.perf_counter() - outcome.started
                probe_epoch = probe_record(probe, seconds, validated=validated)
                if on_epoch_end is not None:
                    on_epoch_end(probe_epoch)
            if trainer is not None:
                seed, batch = cfg.seed, cfg.trainer.batch_size
                train_loader = inputs.loader("train", batch_size=batch, seed=seed)
                val_loader = inputs.loader("val", batch_size=cfg.trainer.eval_batch_size, seed=seed)
                module = TransferModule(
                    inputs.network,
                    backbone=model.network.backbone,
                    head=model.network.head,
                    groups=model.groups,
                    phases=model.loop_phases,
                    optimizer_cfg=cfg.optimizer,
                    schedule_cfg=cfg.schedule,
                    steps_per_epoch=len(train_loader),
                    check_every_step=not device.is_gpu,
                    on_epoch_end=on_epoch_end,
                    num_classes=splits.num_classes,
                    penalty=model.penalty,
                    keep_norm_stats=model.keep_norm_stats,
                    patience=cfg.trainer.patience if cfg.trainer.early_stopping else None,
                )
                trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
        loop_progress = module.progress if module is not None else None
        progress = fit_progress(model, probe_epoch, loop_progress, n_train=len(splits.train))
        evaluation = evaluate_trial(
            inputs,
            splits,
            status=outcome.status,
            progress=progress,
            best=module.best if module is not None else None,
            batch_size=cfg.trainer.eval_batch_size,
            seed=cfg.seed,
            device_type=device.kind,
            precision=precision,
        )
        status = N.COLLAPSED_PREFIX + evaluation.collapse if evaluation.collapse else outcome.status
        decision = compiled.decision if compiled is not None else None
        metrics = trial_metrics(model, progress, evaluation, probe=probe, compiled=decision)
        cost, flops_check = trial_cost_of(
            model,
            inputs,
            outcome,
            samples=progress.phase_samples,
            probe=probe,
            eval_images=evaluation.eval_images,
            identity=identity,
        )
        metrics.update(cost)
        tags = outcome_tags(
            outcome,
            inputs.cache if inputs is not None else None,
            device,
            status=status,
            collapse=evaluation.collapse,
            cache_reason=plan.reason,
            compiled=decision,
            eager_reason=eager,
            flops_check=flops_check,
        )
        if evaluation.collapse:
            log.warning("trial collapsed: %s", evaluation.collapse)
        if curve is not None:
            curve.flush()  # the curve's last points, before the final values that may repeat them
        if run is not None:
            history = progress.history
            logged = history[-1].metrics() if history else {}  # already in the curve at this step
            run.log_metrics({k: v for k, v in metrics.items() if logged.get(k) != v}, step=len(history))
            run.set_tags(tags)
            if evaluation.predictions:  # per test image: paired comparisons between strategies (the report)
                predictions = {
                    "labels": [int(v) for v in splits.test.labels.tolist()],
                    "predicted": evaluation.predictions,
                    "class_names": list(splits.class_names),
                }
                run.log_text(json.dumps(predictions), N.PREDICTIONS_ARTIFACT)
            run.end(mlflow_status(status, interrupted=outcome.interrupted))
    except BaseException as exc:
        if run is not None:  # a Ctrl-C outside the fit (while the meter started, say) ends it as KILLED
            interrupted = isinstance(exc, KeyboardInterrupt)
            failed = "failed: interrupted" if interrupted else "failed: error while recording"
            run.set_tags({N.STATUS: failed})
            run.end(mlflow_status(failed, interrupted=interrupted))
        raise
    if outcome.interrupted:
        raise KeyboardInterrupt
    if outcome.error is not None:
        raise outcome.error
    log.info("trial %s: %s", status, {k: round(v, 4) for k, v in metrics.items() if "/acc" in k})
    trained_to_end = outcome.status == N.COMPLETED and inputs is not None
    return TrialResult(
        status=status,
        metrics=metrics,
        params=params,
        tags={**before, **tags},
        run_id=run.run_id if run is not None else None,
        history=progress.history,
        test_predictions=evaluation.predictions,
        model=_trained_model(model, splits.class_names, resolution=cfg.data.size)
        if keep_model and trained_to_end
        else None,
    )


def _trained_model(model: BuiltModel, class_names: Sequence[str], *, resolution: int) -> TrainedModel:
    """The trial's whole network (a cached-prefix trial trained the suffix in place), moved to the CPU."""
    import torch

    network = model.network.eval().to("cpu")
    network = network.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    return TrainedModel(
        network=network,
        class_names=list(class_names),
        mean=model.mean,
        std=model.std,
        resolution=resolution,
    )
