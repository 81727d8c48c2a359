"""The LightningModule: one network, its phases (lp_ft has two), lean per-step work; its optimizer's
parameter groups and its LR schedule.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from tlbench.config.schema import OptimizerConfig, OptimizerName, ScheduleConfig, ScheduleName
from tlbench.errors import DivergedError
from tlbench.tracking import names as N
from tlbench.training.freeze import (
    ParamGroups,
    TrainPhase,
    keep_frozen_in_eval,
    keep_norm_statistics,
    set_frozen,
)

log = logging.getLogger(__name__)

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
        bounds: list[tuple[int, int]] = []  # (first step, steps) per phase: each phase restarts the schedule
        start = 0
        for phase in self.phases:
            steps = phase.epochs * self.steps_per_epoch
            bounds.append((start, steps))
            start += steps

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
