"""Step 3 of a trial, the fit: the converged linear probe (L-BFGS on frozen features) when the strategy
has one, then the loop phases in a lean Lightning Trainer, optionally compiled (``trainer.compile``)."""

from __future__ import annotations

import functools
import logging
import math
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import nn

from tlbench.config.schema import ProbeConfig, TrainerConfig
from tlbench.errors import DivergedError
from tlbench.strategies import PROBE_PHASE
from tlbench.training.device import DeviceInfo
from tlbench.training.module import EpochRecord, FitProgress
from tlbench.training.network import BuiltModel

log = logging.getLogger(__name__)


# -- the converged linear probe ----------------------------------------------------------------------
# On frozen features a linear head is fitted as a multinomial logistic regression (as Kumar et al., 2022
# fit LP-FT's probe): the exact minimum of mean cross-entropy + ``l2``/2 * ||W||^2 over the whole
# training split. ``l2=None``: every ``l2_grid`` value is fitted (warm-started from the strongest
# penalty down) and the best validation accuracy kept; ties go to the strongest penalty (as
# ``LogisticRegressionCV``): small validation sets often tie (49 hymenoptera images: 100% at every
# value), and the validation loss would always pick the weakest penalty on separable features.


@dataclass(frozen=True)
class ProbeFit:
    """What fitting the probe did; ``evaluations`` counts full-batch forward+backward passes."""

    l2: float
    train_loss: float  # mean cross-entropy on the training features (without the penalty)
    val_acc: float
    val_loss: float
    evaluations: int  # objective + gradient evaluations over all l2 values (the FLOP count's unit)
    iterations: int  # L-BFGS iterations of the chosen l2's fit
    converged: bool  # the chosen fit's gradient max-norm fell below the tolerance
    tried: tuple[tuple[float, float], ...]  # (l2, val/acc) of every value fitted


def _decayed(head: nn.Module) -> list[nn.Parameter]:
    return [p for p in head.parameters() if p.ndim > 1]  # weights, not biases (as weight_decay elsewhere)


def _objective(head: nn.Module, x: torch.Tensor, y: torch.Tensor, l2: float) -> torch.Tensor:
    loss = F.cross_entropy(head(x), y)
    if l2 > 0:
        loss = loss + 0.5 * l2 * sum((p * p).sum() for p in _decayed(head))
    return loss


def _grad_max(head: nn.Module) -> float:
    return max(float(p.grad.abs().max()) for p in head.parameters() if p.grad is not None)


def minimise(
    head: nn.Module, x: torch.Tensor, y: torch.Tensor, *, l2: float, cfg: ProbeConfig
) -> tuple[int, int, bool]:
    """Fit ``head`` in place on (x, y); returns (evaluations, iterations, converged)."""
    # torch's L-BFGS, not scikit-learn's LogisticRegression: it fits the head itself (an MLP head too) on
    # the device's tensors and counts its evaluations, the unit of the probe's FLOP count.
    params = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=cfg.max_iter,
        max_eval=cfg.max_iter * 2,
        tolerance_grad=cfg.tolerance,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        evaluations += 1
        optimizer.zero_grad(set_to_none=False)
        loss = _objective(head, x, y, l2)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    with torch.enable_grad():
        optimizer.step(closure)  # type: ignore[no-untyped-call]
        state = optimizer.state[optimizer._params[0]]  # type: ignore[attr-defined]
        iterations = int(state.get("n_iter", 0))
        closure()  # the gradient at the solution, for the convergence check
        converged = _grad_max(head) <= cfg.tolerance * 10 or iterations < cfg.max_iter
    optimizer.zero_grad(set_to_none=True)
    return evaluations, iterations, converged


@torch.inference_mode()
def _score(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    logits = head(x).float()
    return float((logits.argmax(dim=1) == y).float().mean()), float(F.cross_entropy(logits, y))


def fit_probe(
    head: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    cfg: ProbeConfig,
) -> ProbeFit:
    """Fit ``head`` in place, from its current weights, on frozen ``train`` (features, labels); the
    ``val`` split chooses ``l2`` when ``cfg.l2`` is None."""
    x, y = train[0].float(), train[1]
    was_training = head.training
    head.train()  # no dropout in a linear head; an MLP head's dropout is part of its objective
    grid = [cfg.l2] if cfg.l2 is not None else sorted(cfg.l2_grid, reverse=True)
    best: tuple[float, dict[str, torch.Tensor], float, int, bool, float] | None = None
    tried: list[tuple[float, float]] = []
    evaluations = 0
    for l2 in grid:  # warm start: each fit starts from the previous (more penalised) solution
        evals, iterations, converged = minimise(head, x, y, l2=l2, cfg=cfg)
        evaluations += evals
        head.eval()
        val_acc, val_loss = _score(head, val[0].float(), val[1])
        head.train()
        tried.append((l2, val_acc))
        if best is None or val_acc > best[0]:  # strictly better: ties keep the stronger penalty
            state = {k: v.detach().clone() for k, v in head.state_dict().items()}
            best = (val_acc, state, l2, iterations, converged, val_loss)
    assert best is not None  # the grid is never empty (checked by ProbeConfig)
    val_acc, state, l2, iterations, converged, val_loss = best
    head.load_state_dict(state)
    head.train(was_training)
    with torch.inference_mode():
        train_loss = float(F.cross_entropy(head(x), y))
    if not converged:
        log.warning("linear probe (l2=%g) did not converge in %d L-BFGS iterations", l2, cfg.max_iter)
    log.info(
        "linear probe: l2=%g val/acc=%.4f (%d iterations; %d evaluations)",
        l2,
        val_acc,
        iterations,
        evaluations,
    )
    if not math.isfinite(train_loss):
        raise DivergedError(f"linear probe diverged: training loss {train_loss}")
    return ProbeFit(
        l2=l2,
        train_loss=train_loss,
        val_acc=val_acc,
        val_loss=val_loss,
        evaluations=evaluations,
        iterations=iterations,
        converged=converged,
        tried=tuple(tried),
    )


# -- compiled training steps -------------------------------------------------------------------------
# ``trainer.compile``: torch.compile for the training forward/backward of full batches only. Validation,
# evaluation and an epoch's last, smaller batch stay eager: every new shape or train/eval mode is another
# compile (lite0 at 32 px on 2 CPU cores: 84 s for the training step, 31 s more for eval mode, 73 s more
# for a second eval shape), more than those few batches save.
#
# ``auto`` decides in device time that does not move with the machine's load (CPU seconds on a CPU, wall
# seconds on a GPU): after ``compile_after_steps`` eager full batches it compiles when
# ``steps left x step cost x (1 - 1 / compile_speedup) > compile cost``. Steps left: the rest of this fit
# plus ``planned_trials - 1`` fits of the same size (a sweep worker's trials on one graph). Compile cost:
# ``compile_cost_s`` for a graph this process has not compiled, almost nothing for one it has (measured
# 0.16 s for the first step of a second model instance).
#
# CPU defaults, measured (docs/benchmarks.md; lite0, channels_last, one thread, 2-core Xeon): at 32 px
# (batch 32) a compiled step ran 1.64x as fast, a cold compile took 84 s; at 224 px (full fine-tune, batch
# 16) 1.05x, and 60 CPU-s (1,314 s of wall time with ten other processes on the CPU: why the rule never
# reads the wall clock there). ``compile_speedup=null``: the measurement nearest the input side (log
# scale); ``compile_cost_s=null``: 90 CPU-s. On a GPU 60 s and 1.6x are assumptions. The compile time is
# inside the fit's timer and also reported as ``cost/compile_seconds`` (first compiled step minus a
# typical one).

_DEFAULT_COST_S = {"cpu": 90.0, "cuda": 60.0}  # cold compile of a CNN training step (see module doc)
# (input side px, compiled/eager step speed) measured on a CPU (module doc); GPUs: an assumed 1.6x
_CPU_SPEEDUPS = ((32, 1.64), (224, 1.05))
_GPU_SPEEDUP = 1.6
_WARM_COST_S = 2.0  # guard checks and cache lookups when this process already compiled the graph

# Graphs this process has compiled: (architecture, trainable-parameter pattern, input shape/dtype/layout).
_COMPILED: set[tuple[object, ...]] = set()


def compile_mode(trainer: TrainerConfig) -> str:
    """``trainer.compile`` normalised: YAML booleans arrive as True/False or "True"/"False"."""
    return str(trainer.compile).strip().lower()


def graph_key(network: nn.Module, x: torch.Tensor) -> tuple[object, ...]:
    """What makes two training steps one compiled graph here: the network's type, which parameters
    train, which modules run in train mode (lp_ft and bitfit keep BatchNorm in eval mode: another
    graph, measured as a 64 s recompile in a smoke study when this key lacked it) and the batch."""
    trainable = tuple(p.requires_grad for p in network.parameters())
    modes = tuple(m.training for m in network.modules())
    layout = "channels_last" if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) else "c"
    return (type(network).__qualname__, trainable, modes, tuple(x.shape), x.dtype, layout, str(x.device))


@dataclass
class CompileDecision:
    """What the callback did, for the trial's record."""

    mode: str  # auto | true | false
    compiled: bool = False
    reason: str = ""
    compile_seconds: float = 0.0
    step_seconds: list[float] = field(default_factory=list)  # compiled full-batch steps


class CompiledTraining(Callback):
    """Run a network's full training batches through ``torch.compile`` (see the module docstring)."""

    def __init__(self, trainer_cfg: TrainerConfig, *, device_kind: str, input_side: int) -> None:
        self.cfg = trainer_cfg
        self.input_side = input_side  # the images' side in pixels (the batch may hold cached features)
        self.decision = CompileDecision(mode=compile_mode(trainer_cfg))
        cost = trainer_cfg.compile_cost_s
        self.cost_s = cost if cost is not None else _DEFAULT_COST_S.get(device_kind, 60.0)
        self.planned_trials = trainer_cfg.planned_trials or 1
        self._clock = time.process_time if device_kind == "cpu" else time.perf_counter  # see above
        self._unit = "CPU-s" if device_kind == "cpu" else "s"
        self._compiled: Any = None
        self._shape: tuple[int, ...] | None = None
        self._eager_steps: list[float] = []  # device time of full eager batches
        self._started: float | None = None
        self._started_device: float | None = None
        self._active = False

    # -- the decision ------------------------------------------------------------------------------

    def _compile(self, network: nn.Module, x: torch.Tensor, reason: str) -> None:
        key = graph_key(network, x)
        self._compiled = torch.compile(network._call_impl, dynamic=False)
        self._shape = tuple(x.shape)
        self.decision.compiled = True
        self.decision.reason = reason
        _COMPILED.add(key)
        log.info("compiling the training step (%s)", reason)

    def _auto(self, network: nn.Module, x: torch.Tensor, trainer: Any) -> None:
        per_step = statistics.median(self._eager_steps)
        total = int(trainer.estimated_stepping_batches)
        steps = max(0, total - int(trainer.global_step)) + (self.planned_trials - 1) * total
        remaining = steps * per_step
        warm = graph_key(network, x) in _COMPILED
        cost = _WARM_COST_S if warm else self.cost_s
        speedup = self.cfg.compile_speedup or expected_speedup(self._unit == "CPU-s", side=self.input_side)
        saving = remaining * (1.0 - 1.0 / speedup)
        unit = self._unit
        what = (
            f"{steps} eager steps planned on this graph ({self.planned_trials} trial(s)) x "
            f"{per_step:.2f} {unit} = {remaining:.0f} {unit}, "
            f"saving {saving:.0f} {unit} vs compile {cost:.0f} {unit}"
        )
        what += " (graph already compiled in this process)" if warm else ""
        if saving > cost:
            self._compile(network, x, f"auto: {what}")
        else:
            self.decision.reason = f"auto: not compiled, {what}"

    # -- Lightning hooks: the network is the LightningModule's (TransferModule.network) -------------

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        x, network, mode = batch[0], pl_module.network, self.decision.mode
        if mode == "true" and self._compiled is None:
            self._compile(network, x, "trainer.compile=true")
        elif (
            mode == "auto"
            and self._compiled is None
            and not self.decision.reason
            and len(self._eager_steps) >= self.cfg.compile_after_steps
        ):
            self._auto(network, x, trainer)
        self._active = self._compiled is not None and tuple(x.shape) == self._shape
        network._compiled_call_impl = self._compiled if self._active else None
        self._started, self._started_device = time.perf_counter(), self._clock()

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._started is None or self._started_device is None:
            return
        seconds, device_seconds = time.perf_counter() - self._started, self._clock() - self._started_device
        self._started = self._started_device = None
        if self._active:
            self.decision.step_seconds.append(seconds)
        elif self._compiled is None and len(batch[0]) == self.cfg.batch_size:
            self._eager_steps.append(device_seconds)  # full eager batches: what the auto rule extrapolates
        pl_module.network._compiled_call_impl = None  # validation and evaluation stay eager

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        pl_module.network._compiled_call_impl = None
        steps = self.decision.step_seconds
        if steps:
            typical = statistics.median(steps[1:]) if len(steps) > 1 else 0.0
            self.decision.compile_seconds = max(0.0, steps[0] - typical)
        if self.decision.mode == "auto" and not self.decision.reason:
            self.decision.reason = "auto: not compiled, too few full training batches to measure"


def expected_speedup(on_cpu: bool, *, side: int) -> float:
    """The measured compiled/eager step speed nearest an input of ``side`` pixels (log scale)."""
    if not on_cpu:
        return _GPU_SPEEDUP
    return min(_CPU_SPEEDUPS, key=lambda point: abs(math.log(point[0] / max(1, side))))[1]


def compile_callback(
    trainer_cfg: TrainerConfig, *, device_kind: str, input_side: int
) -> tuple[CompiledTraining | None, str | None]:
    """The callback for ``trainer.compile`` true/auto, and None with why a trial trains eagerly whatever
    it measures (the ``compile_reason`` tag) when compiling is off or unavailable."""
    mode = compile_mode(trainer_cfg)
    if mode == "false" or device_kind == "mps":
        reason = "trainer.compile=false" if mode == "false" else f"trainer.compile={mode}: not on MPS"
        log.info("training eagerly (%s)", reason)
        return None, reason
    return CompiledTraining(trainer_cfg, device_kind=device_kind, input_side=input_side), None


# -- the fit -----------------------------------------------------------------------------------------


@functools.cache  # once per process
def quiet_lightning() -> None:
    """Lightning's start-up banners and small-dataset hints are noise for a benchmark; keep its warnings."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def build_trainer(
    device: DeviceInfo,
    trainer: TrainerConfig,
    *,
    precision: str,
    deterministic: bool | str,
    max_epochs: int,
    validate: bool,
    callbacks: Sequence[Callback],
) -> L.Trainer:
    """A lean Lightning Trainer (no checkpoints, sanity validation or logger)."""
    quiet_lightning()
    kwargs: dict[str, Any] = {}
    if trainer.max_fit_seconds:
        kwargs["max_time"] = timedelta(seconds=trainer.max_fit_seconds)
    if not validate:  # data.train_on_val: validation would measure training images
        kwargs["limit_val_batches"] = 0
    return L.Trainer(
        accelerator=device.accelerator,
        devices=[device.index] if device.index is not None else 1,
        precision=precision,  # type: ignore[arg-type]
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=trainer.progress_bar,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=trainer.val_every_n_epochs,
        deterministic=deterministic,  # type: ignore[arg-type]
        log_every_n_steps=10_000,
        callbacks=list(callbacks),
        **kwargs,
    )


def probe_record(probe: ProbeFit, seconds: float, *, validated: bool) -> EpochRecord:
    """The converged probe as epoch 0 (``validated``: False when the validation images were trained on)."""
    return EpochRecord(
        epoch=0,
        phase=PROBE_PHASE,
        train_loss=probe.train_loss,
        val_acc=probe.val_acc if validated else None,
        val_loss=probe.val_loss if validated else None,
        seconds=seconds,
    )


def fit_progress(
    model: BuiltModel, probe: EpochRecord | None, loop: FitProgress | None, *, n_train: int
) -> FitProgress:
    """Training samples per phase and the history (``probe``: the probe's fit as epoch 0), read after the
    fit ends (also after a prune or a failure). ``loop``: the Lightning module's progress, if it ran."""
    samples: list[int] = []
    history: list[EpochRecord] = []
    if model.phases and not model.phases[0].in_loop:
        samples.append(n_train if probe else 0)  # FLOPs: x evaluations
        history += [probe] if probe is not None else []
    samples += loop.phase_samples if loop is not None else [0] * len(model.loop_phases)
    history += loop.history if loop is not None else []
    return FitProgress(phase_samples=samples, history=history, steps=loop.steps if loop is not None else 0)
