"""The fit phase: a lean Lightning Trainer (no checkpoints, sanity validation or logger) under the meter."""

from __future__ import annotations

import gc
import logging
import signal
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from tlbench.config.schema import RunConfig, StrategyName
from tlbench.cost.meter import FitMeter
from tlbench.errors import TrialFailed, TrialPruned
from tlbench.models.freeze import set_frozen
from tlbench.models.module import EpochRecord, FitProgress, TransferModule
from tlbench.training.compiled import CompileDecision, compile_callback
from tlbench.training.inputs import TrialInputs, image_inputs, trial_inputs
from tlbench.training.prepare import PreparedTrial
from tlbench.training.probe import ProbeFit, fit_probe

log = logging.getLogger(__name__)

_QUIETED = False


def quiet_lightning() -> None:
    """Lightning's start-up banners and small-dataset hints are noise for a benchmark; keep its warnings."""
    global _QUIETED
    if _QUIETED:
        return
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    _QUIETED = True


@dataclass
class FitOutcome:
    """How the fit ended. ``status``: completed | pruned | failed: <reason>."""

    status: str
    progress: FitProgress
    seconds: float
    peak_mb: float
    memory_kind: str
    inputs: TrialInputs | None = None  # None when the fit failed before its inputs existed
    error: BaseException | None = None  # an unexpected exception, re-raised after it is recorded
    interrupted: bool = False  # Ctrl-C: recorded, then re-raised as KeyboardInterrupt
    probe: ProbeFit | None = None  # the converged linear probe (linear_probe, lp_ft's first phase)
    compile: CompileDecision | None = None  # trainer.compile's decision (None: off, or nothing trained)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower()


def release_memory(on_gpu: bool = True) -> None:
    """Collect what a finished or failed trial left behind (an exception's frames hold activations)
    and return the CUDA allocator's cached blocks: after an out-of-memory error, and between the
    trials of a sweep, so the next one starts clean."""
    gc.collect()
    if on_gpu and torch.cuda.is_available():
        torch.cuda.empty_cache()


def build_module(
    prepared: PreparedTrial, inputs: TrialInputs, on_epoch_end: Callable[[EpochRecord], None] | None
) -> TransferModule:
    cfg, model = prepared.cfg, prepared.model
    steps_per_epoch = len(inputs.loader("train", batch_size=cfg.trainer.batch_size, seed=cfg.seed))
    return TransferModule(
        inputs.network,
        backbone=model.network.backbone,
        head=model.network.head,
        groups=model.groups,
        phases=model.loop_phases,
        optimizer_cfg=cfg.optimizer,
        schedule_cfg=cfg.schedule,
        steps_per_epoch=steps_per_epoch,
        check_every_step=not prepared.device.is_gpu,
        on_epoch_end=on_epoch_end,
        num_classes=prepared.splits.num_classes,
        keep_norm_stats=keep_norm_stats(cfg),
    )


def keep_norm_stats(cfg: RunConfig) -> bool:
    """``strategy.keep_norm_stats``, defaulting to true for lp_ft only."""
    if cfg.strategy.keep_norm_stats is not None:
        return cfg.strategy.keep_norm_stats
    return cfg.strategy.name == StrategyName.lp_ft


def build_trainer(prepared: PreparedTrial, callbacks: Sequence[Callback]) -> L.Trainer:
    cfg, device = prepared.cfg, prepared.device
    kwargs: dict[str, Any] = {}
    if cfg.trainer.max_fit_seconds:
        kwargs["max_time"] = timedelta(seconds=cfg.trainer.max_fit_seconds)
    return L.Trainer(
        accelerator=device.accelerator,
        devices=[device.index] if device.index is not None else 1,
        precision=prepared.precision,  # type: ignore[arg-type]
        max_epochs=sum(p.epochs for p in prepared.model.loop_phases),
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=cfg.trainer.progress_bar,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=cfg.trainer.val_every_n_epochs,
        # "warn" on GPUs: some CUDA kernels have no deterministic variant and must not abort a trial.
        deterministic=(not device.is_gpu or "warn") if cfg.trainer.deterministic else False,
        log_every_n_steps=10_000,
        callbacks=list(callbacks),
        **kwargs,
    )


def _probe_record(probe: ProbeFit, seconds: float) -> EpochRecord:
    return EpochRecord(
        epoch=0,
        phase="linear_probe",
        train_loss=probe.train_loss,
        val_acc=probe.val_acc,
        val_loss=probe.val_loss,
        seconds=seconds,
    )


def _fit_probe(prepared: PreparedTrial, inputs: TrialInputs) -> ProbeFit:
    """The probe phase on frozen features; its result replaces the head's initial weights."""
    head = prepared.model.network.head
    try:
        return fit_probe(head, inputs.data["train"], inputs.data["val"], prepared.cfg.strategy.probe)
    except FloatingPointError as exc:
        raise TrialFailed(str(exc)) from None


def fit(
    prepared: PreparedTrial,
    *,
    callbacks: Sequence[Callback] = (),
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
) -> FitOutcome:
    """Train; never raises for pruning, divergence or OOM — those end in ``status``.

    A converged probe phase (L-BFGS on the frozen features) runs first when the strategy has one;
    the loop phases (``lp_ft``'s fine-tune, every other strategy) then run in Lightning on images
    or on cached frozen-prefix activations.
    """
    quiet_lightning()
    meter = FitMeter(prepared.device)
    status, error, interrupted, oom = "completed", None, False, False
    inputs: TrialInputs | None = None
    module: TransferModule | None = None
    probe: ProbeFit | None = None
    compiled = None
    handler = signal.getsignal(signal.SIGINT)
    model, batch, seed = prepared.model, prepared.cfg.trainer.batch_size, prepared.cfg.seed
    try:
        with meter:
            started = time.perf_counter()
            inputs = trial_inputs(prepared)  # feature extraction is training work: inside the timer
            if model.phases[0].solver == "lbfgs":
                probe = _fit_probe(prepared, inputs)
                if on_epoch_end is not None:
                    on_epoch_end(_probe_record(probe, time.perf_counter() - started))
            loop = model.loop_phases
            if loop and probe is not None:  # lp_ft: fine-tune every layer from the probe's solution
                set_frozen(model.network.backbone, model.groups, loop[0].freeze_depth)
                features = inputs.cache
                inputs = image_inputs(prepared, features.reason)
                inputs.cache = features  # the probe's extraction is this trial's feature-cache use
            if loop:
                module = build_module(prepared, inputs, on_epoch_end)
                compiled = compile_callback(
                    inputs.network, prepared.cfg.trainer, device_kind=prepared.device.kind
                )
                trainer = build_trainer(prepared, [*callbacks, *([compiled] if compiled else [])])
                trainer.fit(
                    module,
                    train_dataloaders=inputs.loader("train", batch_size=batch, seed=seed),
                    val_dataloaders=inputs.loader(
                        "val", batch_size=prepared.cfg.trainer.eval_batch_size, seed=seed
                    ),
                )
    except TrialPruned:
        status = "pruned"
    except TrialFailed as exc:
        status = f"failed: {exc.reason}"
    except (KeyboardInterrupt, SystemExit):
        # Lightning turns Ctrl-C into sys.exit(1) after ignoring SIGINT: restore, record, re-raise.
        status, interrupted = "failed: interrupted", True
    except Exception as exc:
        if _is_oom(exc):
            status = f"failed: out of memory ({str(exc).splitlines()[0][:160]})"
            oom = True
        else:
            status, error = (
                f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
                exc,
            )
    finally:
        signal.signal(signal.SIGINT, handler)
    if oom:
        release_memory(prepared.device.is_gpu)
    progress = _progress(prepared, module, probe)
    return FitOutcome(
        status=status,
        progress=progress,
        seconds=meter.seconds,
        peak_mb=meter.peak_mb,
        memory_kind=meter.memory_kind,
        error=error,
        interrupted=interrupted,
        inputs=inputs,
        probe=probe,
        compile=compiled.decision if compiled is not None else None,
    )


def _progress(prepared: PreparedTrial, module: TransferModule | None, probe: ProbeFit | None) -> FitProgress:
    """Training samples per phase of the model and the per-epoch history (the probe's fit as epoch 0)."""
    loop = module.progress if module is not None else None
    samples: list[int] = []
    history: list[EpochRecord] = []
    if prepared.model.phases and not prepared.model.phases[0].in_loop:
        n_train = len(prepared.splits.train)
        samples.append(n_train if probe is not None else 0)  # its FLOPs: x objective evaluations
        if probe is not None:
            history.append(_probe_record(probe, 0.0))
    loop_count = len(prepared.model.loop_phases)
    samples += loop.phase_samples if loop is not None else [0] * loop_count
    history += loop.history if loop is not None else []
    return FitProgress(phase_samples=samples, history=history)
