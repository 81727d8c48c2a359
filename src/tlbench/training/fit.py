"""Step 3 of a trial, the fit: the converged linear probe (L-BFGS on frozen features) when the strategy
has one, then the loop phases in a lean Lightning Trainer (the LightningModule, its optimizer's parameter
groups and its LR schedule), optionally compiled (``trainer.compile``)."""

from __future__ import annotations

import bisect
import functools
import itertools
import logging
import math
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from tlbench.config.schema import (
    OptimizerConfig,
    OptimizerName,
    ProbeConfig,
    ScheduleConfig,
    ScheduleName,
    TrainerConfig,
)
from tlbench.errors import DivergedError
from tlbench.strategies import PROBE_PHASE
from tlbench.tracking import names as N
from tlbench.training.device import DeviceInfo
from tlbench.training.network import (
    BuiltModel,
    ParamGroups,
    TrainPhase,
    keep_frozen_in_eval,
    keep_norm_statistics,
    set_frozen,
)

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


# -- the LightningModule ----------------------------------------------------------------------------

# An epoch whose mean training loss is this many times the chance-level cross-entropy, ln(classes),
# has diverged even though the loss is still finite: LR=10 gives 90-1000x within two epochs, at chance
# accuracy. Runs that recover stay well below: scratch at LR=0.1 on digits spikes to 12x, then falls.
EXPLODED_LOSS_FACTOR = 50.0


@dataclass
class EpochRecord:
    epoch: int  # 1-based
    phase: str
    train_loss: float
    val_acc: float | None = None
    val_loss: float | None = None
    seconds: float = 0.0  # since fit start

    def metrics(self) -> dict[str, float]:
        out = {N.TRAIN_LOSS: self.train_loss}
        if self.val_acc is not None:
            out[N.VAL_ACC] = self.val_acc
        if self.val_loss is not None:
            out[N.VAL_LOSS] = self.val_loss
        return out


@dataclass
class FitProgress:
    """What the fit did, read after it ends (also after a prune or a failure)."""

    phase_samples: list[int]
    history: list[EpochRecord] = field(default_factory=list)
    steps: int = 0  # optimizer steps the loop ran (early stopping may end it before its budget)


@dataclass
class BestWeights:
    """The weights of the best validation check of the last phase so far (early stopping keeps them)."""

    val_acc: float
    val_loss: float
    step: int  # optimizer steps done when they were validated
    epoch: int  # 1-based
    state: dict[str, torch.Tensor]  # a copy of the network's state dict (parameters and buffers)


class TransferModule(L.LightningModule):
    """Trains ``network`` phase by phase, the frozen part in eval mode (``backbone``/``head``: its parts,
    for freezing and LR groups). Losses are accumulated on the device and read once per epoch (on a
    CPU every step: free there, and a diverged run stops sooner).

    Early stopping (``patience`` set): in the last phase only (stopping a loop probe phase would skip
    the phase the strategy is about), the best validated state is kept in memory (:attr:`best`, which
    the caller restores) and the fit stops after ``patience`` checks without a strictly higher val/acc.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        backbone: nn.Module,
        head: nn.Module,
        groups: ParamGroups,
        phases: Sequence[TrainPhase],
        optimizer_cfg: OptimizerConfig,
        schedule_cfg: ScheduleConfig,
        steps_per_epoch: int,
        check_every_step: bool,
        on_epoch_end: Callable[[EpochRecord], None] | None = None,
        num_classes: int,
        keep_norm_stats: bool = False,
        patience: int | None = None,
        penalty: Callable[[], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self._backbone = [backbone]  # lists hide them from nn.Module registration (already in network)
        self._head = [head]
        self.groups = groups
        self.phases = tuple(phases)
        self.optimizer_cfg = optimizer_cfg
        self.schedule_cfg = schedule_cfg
        self.steps_per_epoch = steps_per_epoch
        self.check_every_step = check_every_step
        self.on_epoch_end = on_epoch_end  # e.g. per-epoch metrics to the tracker
        self.keep_norm_stats = keep_norm_stats  # BatchNorm normalises with running statistics (lp_ft)
        self.penalty = penalty  # added to the loss that is minimised, not to train/loss (e.g. L2-SP)
        # above this mean epoch loss the run has diverged (None: only non-finite losses count)
        self.exploded_loss = EXPLODED_LOSS_FACTOR * math.log(num_classes) if num_classes > 1 else None
        self.progress = FitProgress(phase_samples=[0] * len(self.phases))
        self._phase_index = 0
        # The first phase's freeze, before the optimizer sees which parameters train (lp_ft: the
        # fine-tune unfreezes what the probe kept frozen).
        set_frozen(backbone, groups, self.phases[0].freeze_depth)
        self._epoch_loss = torch.zeros(())
        self._epoch_seen = 0
        # Registered submodules: Lightning moves them to the device; no NaN check, so no per-step sync.
        self.val_accuracy = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_loss = MeanMetric(nan_strategy="disable")
        self._fit_start = time.perf_counter()
        self._pending_val: tuple[float, float] | None = None  # (acc, loss) of this epoch's validation
        self.patience = patience  # None: no early stopping
        self.best: BestWeights | None = None
        self._checks_since_best = 0

    # -- phases -------------------------------------------------------------------------------
    def _phase_at(self, epoch: int) -> int:
        ends = list(itertools.accumulate(phase.epochs for phase in self.phases))
        return min(bisect.bisect_right(ends, epoch), len(self.phases) - 1)

    # Phases and frozen BatchNorm stay here, not in Lightning's BaseFinetuning: lp_ft's first phase is
    # an L-BFGS probe outside the loop, unfrozen parameters are in the optimizer from the start, and
    # its frozen BatchNorm (track_running_stats=False) normalises with batch statistics, not running ones.
    def train(self, mode: bool = True) -> TransferModule:
        super().train(mode)
        if mode:
            keep_frozen_in_eval(self.network)
            if self.keep_norm_stats:
                keep_norm_statistics(self.network)
        return self

    def on_fit_start(self) -> None:
        self._fit_start = time.perf_counter()

    def on_train_epoch_start(self) -> None:
        index = self._phase_at(self.current_epoch)
        if index != self._phase_index:
            self._phase_index = index
            set_frozen(self._backbone[0], self.groups, self.phases[index].freeze_depth)
            log.info("phase %s: freeze_depth=%d", self.phases[index].name, self.phases[index].freeze_depth)
        # Lightning keeps whatever modes modules have: set them explicitly every epoch.
        self.train()
        self._epoch_loss = torch.zeros((), device=self.device)
        self._epoch_seen = 0

    # -- steps --------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.network(x), y)
        n = int(y.shape[0])
        detached = loss.detach()
        self._epoch_loss += detached * n
        self._epoch_seen += n
        self.progress.phase_samples[self._phase_index] += n
        self.progress.steps += 1
        if self.check_every_step and not bool(torch.isfinite(detached)):
            raise DivergedError(
                f"diverged: training loss is {float(detached)} at epoch {self.current_epoch + 1}"
            )
        return loss if self.penalty is None else loss + self.penalty()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.network(x).float()
        self.val_accuracy.update(logits, y)
        self.val_loss.update(F.cross_entropy(logits, y), weight=y.shape[0])

    def on_validation_epoch_end(self) -> None:
        if self.val_accuracy.update_count == 0 or self.trainer.sanity_checking:
            return
        acc, loss = float(self.val_accuracy.compute()), float(self.val_loss.compute())
        self.val_accuracy.reset()
        self.val_loss.reset()
        self.log(N.VAL_ACC, acc, prog_bar=True)
        self._pending_val = (acc, loss)
        if self.patience is not None and self._phase_index == len(self.phases) - 1:
            self._early_stopping(acc, loss)

    # Not Lightning's EarlyStopping + ModelCheckpoint: those would count a loop probe phase's checks,
    # and keep the best weights on disk; here the phase decides and the copy stays in memory.
    def _early_stopping(self, acc: float, loss: float) -> None:
        step, epoch = int(self.trainer.global_step), self.current_epoch + 1
        if self.best is None or acc > self.best.val_acc:
            state = {k: v.detach().clone() for k, v in self.network.state_dict().items()}
            self.best = BestWeights(val_acc=acc, val_loss=loss, step=step, epoch=epoch, state=state)
            self._checks_since_best = 0
            return
        self._checks_since_best += 1
        if self.patience is not None and self._checks_since_best >= self.patience:
            log.info(
                "early stopping at step %d (epoch %d): val/acc %.4f at step %d not beaten in %d checks",
                step, epoch, self.best.val_acc, self.best.step, self._checks_since_best,
            )  # fmt: skip
            self.trainer.should_stop = True

    # Divergence is checked here, not with Lightning's EarlyStopping(check_finite, divergence_threshold):
    # that stops the fit as a success (the trial must be recorded failed with the reason), needs the
    # loss logged (a device sync) every step, and checks only at epoch ends (a CPU step check stops sooner).
    def on_train_epoch_end(self) -> None:
        train_loss = float(self._epoch_loss) / max(1, self._epoch_seen)
        if not math.isfinite(train_loss):
            raise DivergedError(f"diverged: training loss is {train_loss} in epoch {self.current_epoch + 1}")
        if self.exploded_loss is not None and train_loss > self.exploded_loss:
            chance = self.exploded_loss / EXPLODED_LOSS_FACTOR
            raise DivergedError(
                f"diverged: training loss exploded to {train_loss:.4g} in epoch {self.current_epoch + 1} "
                f"(over {EXPLODED_LOSS_FACTOR:g}x the chance level ln(classes) = {chance:.3g})"
            )
        pending, self._pending_val = self._pending_val, None
        record = EpochRecord(
            epoch=self.current_epoch + 1,
            phase=self.phases[self._phase_index].name,
            train_loss=train_loss,
            val_acc=pending[0] if pending else None,
            val_loss=pending[1] if pending else None,
            seconds=time.perf_counter() - self._fit_start,
        )
        self.progress.history.append(record)
        if self.on_epoch_end is not None:
            self.on_epoch_end(record)
        val = f" val/acc={record.val_acc:.4f}" if record.val_acc is not None else ""
        total_epochs = sum(p.epochs for p in self.phases)
        log.info(
            "epoch %d/%d [%s] train/loss=%.4f%s (%.1fs)",
            record.epoch, total_epochs, record.phase, train_loss, val, record.seconds,
        )  # fmt: skip

    # -- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        include_frozen = len(self.phases) > 1  # a later phase unfreezes parameters
        groups = build_param_groups(
            self._backbone[0], self._head[0], self.groups, self.optimizer_cfg, include_frozen=include_frozen
        )
        optimizer = create_optimizer(groups, self.optimizer_cfg)
        lengths = [phase.epochs * self.steps_per_epoch for phase in self.phases]
        # (first step, steps) per phase: each phase restarts the schedule
        bounds = list(zip(itertools.accumulate(lengths, initial=0), lengths, strict=False))

        def factor(step: int) -> float:
            for first, steps in reversed(bounds):
                if step >= first:
                    return lr_factor(min(step - first, steps - 1), steps, self.schedule_cfg)
            return lr_factor(0, bounds[0][1], self.schedule_cfg)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


# Optimizer parameter groups: head LR, backbone LR multiplier, layer-wise decay, no decay on 1-D params.


def layer_lr_multipliers(depth: int, cfg: OptimizerConfig) -> list[float]:
    """LR multiplier of each backbone group, ``backbone_lr_mult * layer_decay ** (depth - i)`` (the head is
    layer ``depth``, multiplier 1: the group nearest the input learns slowest)."""
    return [cfg.backbone_lr_mult * cfg.layer_decay ** (depth - i) for i in range(depth)]


# Not timm.optim.param_groups_layer_decay: it groups by the fine group_matcher (coarse=False) where
# freeze_depth and these multipliers share the configured groups, skips frozen parameters (lp_ft's
# fine-tune needs them in the optimizer from the start; timm #2691), and leaves the head to lr_scale.
def build_param_groups(
    backbone: nn.Module, head: nn.Module, groups: ParamGroups, cfg: OptimizerConfig, *, include_frozen: bool
) -> list[dict[str, Any]]:
    """Param groups for ``torch.optim`` (frozen parameters only when a later phase unfreezes them):
    weights decay, except the backbone's under L2-SP (``groups.decay`` false); 1-D parameters never."""
    named = dict(backbone.named_parameters())
    multipliers = layer_lr_multipliers(groups.depth, cfg)
    out: list[dict[str, Any]] = []
    sections: list[tuple[str, list[tuple[str, nn.Parameter]], float]] = [
        (f"backbone.{label}", [(n, named[n]) for n in names], mult)
        for label, names, mult in zip(groups.labels, groups.names, multipliers, strict=True)
    ]
    sections.append(("head", list(head.named_parameters()), 1.0))
    for label, params, mult in sections:
        chosen = [(n, p) for n, p in params if include_frozen or p.requires_grad]
        decay = [p for n, p in chosen if p.ndim > 1]
        no_decay = [p for n, p in chosen if p.ndim <= 1]
        weight_decay = cfg.weight_decay if groups.decay or label == "head" else 0.0
        for plist, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if plist:
                out.append({"params": plist, "lr": cfg.lr * mult, "weight_decay": wd, "name": label})
    return out


def create_optimizer(param_groups: list[dict[str, Any]], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    if not param_groups:
        raise ValueError("no trainable parameters to optimise")
    if cfg.name == OptimizerName.sgd:
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(param_groups, lr=cfg.lr)


# LR schedules as pure functions: ``lr_factor(step, total_steps, cfg)`` -> multiplier of the peak LR.


def _cosine(progress: float, floor: float) -> float:
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def lr_factor(step: int, total_steps: int, cfg: ScheduleConfig) -> float:
    """Multiplier of the peak LR at optimizer step ``step`` (0-based) of ``total_steps``."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps=}")
    progress = step / total_steps
    if cfg.name == ScheduleName.constant:
        return 1.0
    if cfg.name == ScheduleName.step:
        return cfg.gamma ** bisect.bisect_right(list(cfg.milestones), progress)
    if cfg.name == ScheduleName.cosine:
        return _cosine(progress, cfg.min_factor)
    if cfg.name == ScheduleName.warmup_cosine:
        warmup = max(1, round(cfg.warmup_fraction * total_steps)) if cfg.warmup_fraction > 0 else 0
        if step < warmup:
            return (step + 1) / warmup
        return _cosine((step - warmup) / max(1, total_steps - warmup), cfg.min_factor)
    # onecycle (cosine annealing both ways, as torch's OneCycleLR): start/div -> peak -> start/final_div
    start = 1.0 / cfg.div_factor
    end = start / cfg.final_div_factor
    rise = max(1, round(cfg.pct_start * total_steps))
    if step < rise:
        return start + (1.0 - start) * (1.0 - math.cos(math.pi * step / rise)) / 2.0
    fall = (step - rise) / max(1, total_steps - rise)
    return end + (1.0 - end) * (1.0 + math.cos(math.pi * min(fall, 1.0))) / 2.0


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
        samples.append(n_train if probe is not None else 0)  # FLOPs: x evaluations
        history += [probe] if probe is not None else []
    samples += loop.phase_samples if loop is not None else [0] * len(model.loop_phases)
    history += loop.history if loop is not None else []
    return FitProgress(phase_samples=samples, history=history, steps=loop.steps if loop is not None else 0)
