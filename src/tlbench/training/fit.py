"""Step 3 of a trial: the fit, timed; a lean Lightning Trainer (no checkpoints, sanity validation or logger).

The converged probe (L-BFGS on frozen features) runs first when the strategy has one; the loop
phases (``lp_ft``'s fine-tune, every other strategy) then run in Lightning on the trial's inputs.
"""

from __future__ import annotations

import gc
import logging
import signal
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from tlbench.cost.device import resolve_deterministic
from tlbench.cost.meter import FitMeter
from tlbench.errors import TrialFailed, TrialPruned
from tlbench.models.module import BestWeights, EpochRecord, FitProgress, TransferModule
from tlbench.strategies import PROBE_PHASE, strategy
from tlbench.training.compiled import CompileDecision, compile_callback
from tlbench.training.inputs import TrialInputs
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
    seconds: float  # wall clock
    cpu_seconds: float  # process CPU (tlbench.cost.device's rule turns it into device-hours)
    threads: int  # torch intra-op threads during the fit
    peak_mb: float
    memory_kind: str
    inputs: TrialInputs | None = None  # None when the fit failed before its inputs existed
    error: BaseException | None = None  # an unexpected exception, re-raised after it is recorded
    interrupted: bool = False  # Ctrl-C: recorded, then re-raised as KeyboardInterrupt
    probe: ProbeFit | None = None  # the converged linear probe (linear_probe, lp_ft's first phase)
    compile: CompileDecision | None = None  # trainer.compile's decision (None: off, or nothing trained)
    best: BestWeights | None = (
        None  # early stopping: the best validated weights, to restore before evaluation
    )


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
    keep_norm_stats = cfg.strategy.keep_norm_stats
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
        keep_norm_stats=strategy(cfg.strategy.name).keep_norm_stats
        if keep_norm_stats is None
        else keep_norm_stats,
        patience=cfg.trainer.patience if cfg.trainer.early_stopping else None,
    )


def build_trainer(prepared: PreparedTrial, callbacks: Sequence[Callback]) -> L.Trainer:
    cfg, device = prepared.cfg, prepared.device
    kwargs: dict[str, Any] = {}
    if cfg.trainer.max_fit_seconds:
        kwargs["max_time"] = timedelta(seconds=cfg.trainer.max_fit_seconds)
    if prepared.splits.val_in_train:  # data.train_on_val: validation would measure training images
        kwargs["limit_val_batches"] = 0
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
        deterministic=resolve_deterministic(cfg.trainer.deterministic, device),  # type: ignore[arg-type]
        log_every_n_steps=10_000,
        callbacks=list(callbacks),
        **kwargs,
    )


def _probe_record(probe: ProbeFit, seconds: float, *, validated: bool) -> EpochRecord:
    """The converged probe as epoch 0 (``validated``: False when the validation images were trained on)."""
    return EpochRecord(
        epoch=0,
        phase=PROBE_PHASE,
        train_loss=probe.train_loss,
        val_acc=probe.val_acc if validated else None,
        val_loss=probe.val_loss if validated else None,
        seconds=seconds,
    )


def _failure(exc: BaseException) -> tuple[str, bool]:
    """(status, is an out-of-memory error) of an unexpected exception."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower():
        return f"failed: out of memory ({str(exc).splitlines()[0][:160]})", True
    return f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}", False


class Fit:
    """The timed fit of one trial; pruning, divergence, out of memory and Ctrl-C end in its status.

    Usage: ``with fitting: fitting.run(trial_inputs(prepared))``, then ``fitting.outcome()``. The
    block is the timed fit phase (so a frozen-prefix extraction inside it is training work); the
    Trainer is built before the clock starts. Nothing is timed for a strategy that trains nothing
    (as_is: zero training cost by construction).
    """

    def __init__(
        self,
        prepared: PreparedTrial,
        *,
        callbacks: Sequence[Callback] = (),
        on_epoch_end: Callable[[EpochRecord], None] | None = None,
    ) -> None:
        quiet_lightning()
        self.prepared = prepared
        self.on_epoch_end = on_epoch_end
        trains = bool(prepared.model.phases)
        loop = bool(prepared.model.loop_phases)
        self.compiled = (
            compile_callback(
                prepared.cfg.trainer, device_kind=prepared.device.kind, input_side=prepared.cfg.data.size
            )
            if loop
            else None
        )
        extra = [self.compiled] if self.compiled is not None else []
        self.trainer = build_trainer(prepared, [*callbacks, *extra]) if loop else None
        self.meter = FitMeter(prepared.device) if trains else None
        self.validated = not prepared.splits.val_in_train  # data.train_on_val: nothing is validated
        self.status, self.interrupted = "completed", False
        self.error: BaseException | None = None
        self.inputs: TrialInputs | None = None
        self.module: TransferModule | None = None
        self.probe: ProbeFit | None = None
        self._sigint: Any = None
        self._started = 0.0

    def __enter__(self) -> Fit:
        self._sigint = signal.getsignal(signal.SIGINT)
        if self.meter is not None:
            self.meter.__enter__()
            self._started = time.perf_counter()
        return self

    def run(self, inputs: TrialInputs) -> None:
        """Train on ``inputs``: the probe phase, then the loop phases."""
        self.inputs = inputs
        model, cfg = self.prepared.model, self.prepared.cfg
        if model.phases and not model.phases[0].in_loop:  # its result replaces the head's initial weights
            assert inputs.features is not None  # prepare() plans extracted features for every probe
            train, val = inputs.features["train"], inputs.features["val"]
            self.probe = fit_probe(model.network.head, train, val, cfg.strategy.probe)
            if self.on_epoch_end is not None:
                seconds = time.perf_counter() - self._started
                self.on_epoch_end(_probe_record(self.probe, seconds, validated=self.validated))
        if self.trainer is not None:
            self.module = build_module(self.prepared, inputs, self.on_epoch_end)
            seed, batch = cfg.seed, cfg.trainer.batch_size
            self.trainer.fit(
                self.module,
                train_dataloaders=inputs.loader("train", batch_size=batch, seed=seed),
                val_dataloaders=inputs.loader("val", batch_size=cfg.trainer.eval_batch_size, seed=seed),
            )

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if self.meter is not None:
            self.meter.__exit__(exc_type, exc, tb)
        signal.signal(signal.SIGINT, self._sigint)
        if exc is None:
            return False
        if isinstance(exc, TrialPruned):
            self.status = "pruned"
        elif isinstance(exc, TrialFailed):
            self.status = f"failed: {exc.reason}"
        elif isinstance(exc, (KeyboardInterrupt, SystemExit)):
            # Lightning turns Ctrl-C into sys.exit(1) after ignoring SIGINT: record, then re-raise.
            self.status, self.interrupted = "failed: interrupted", True
        elif isinstance(exc, Exception):
            self.status, oom = _failure(exc)
            if oom:
                release_memory(self.prepared.device.is_gpu)
            else:
                self.error = exc  # a bug: re-raised once the trial is recorded
        else:
            return False
        return True

    def outcome(self) -> FitOutcome:
        meter = self.meter
        return FitOutcome(
            status=self.status,
            progress=self._progress(),
            seconds=meter.seconds if meter else 0.0,
            cpu_seconds=meter.cpu_seconds if meter else 0.0,
            threads=meter.threads if meter else torch.get_num_threads(),
            peak_mb=meter.peak_mb if meter else 0.0,
            memory_kind=meter.memory_kind if meter else "none",
            error=self.error,
            interrupted=self.interrupted,
            inputs=self.inputs,
            probe=self.probe,
            compile=self.compiled.decision if self.compiled is not None else None,
            best=self.module.best if self.module is not None else None,
        )

    def _progress(self) -> FitProgress:
        """Training samples per phase and the per-epoch history (the probe's fit as epoch 0)."""
        model, loop = self.prepared.model, self.module.progress if self.module is not None else None
        samples: list[int] = []
        history: list[EpochRecord] = []
        if model.phases and not model.phases[0].in_loop:
            samples.append(len(self.prepared.splits.train) if self.probe else 0)  # FLOPs: x evaluations
            if self.probe is not None:
                history.append(_probe_record(self.probe, 0.0, validated=self.validated))
        samples += loop.phase_samples if loop is not None else [0] * len(model.loop_phases)
        history += loop.history if loop is not None else []
        return FitProgress(
            phase_samples=samples, history=history, steps=loop.steps if loop is not None else 0
        )
