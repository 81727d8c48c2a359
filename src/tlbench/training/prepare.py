"""Everything a trial needs before the clock starts: seed, device, data on the device, model, loaders.

All user errors (bad data, unknown backbone, out-of-range freeze depth) surface here, before an
MLflow run is created, so a mistyped command leaves no half-filled run behind.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import lightning as L
import torch
from torch import nn

from tlbench.config.schema import RunConfig, TrainerConfig
from tlbench.cost.device import DeviceInfo, resolve_device, resolve_precision
from tlbench.data import BatchTransform, DataSplits, TensorSplit, load_splits
from tlbench.models.backbone import pretrained_input_size
from tlbench.models.network import BuiltModel, build_model
from tlbench.training.prefix import PrefixSplit, split_at_freeze_boundary

Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PreparedTrial:
    cfg: RunConfig
    device: DeviceInfo
    precision: str
    splits: DataSplits  # tensors already on the training device
    model: BuiltModel
    channels_last: bool
    prefix_split: PrefixSplit | None = None  # frozen prefix to cache, when the trial allows it
    cache_reason: str = ""  # why caching is on or off (logged as a tag)

    def transform(self, *, train: bool) -> Transform:
        """Per-batch work on the device: augment (training, if enabled), normalize, memory format."""
        generator = None
        if train and self.cfg.data.augment:
            generator = torch.Generator(device=self.device.torch_device).manual_seed(self.cfg.seed)
        base = BatchTransform(mean=self.model.mean, std=self.model.std, generator=generator)
        if not self.channels_last:
            return base
        return lambda batch: base(batch).contiguous(memory_format=torch.channels_last)


def _is_cnn(network: nn.Module) -> bool:
    conv = sum(p.numel() for m in network.modules() if isinstance(m, nn.Conv2d) for p in m.parameters())
    total = sum(p.numel() for p in network.parameters())
    return total > 0 and conv / total > 0.5


def _to_device(split: TensorSplit, device: torch.device) -> TensorSplit:
    return TensorSplit(images=split.images.to(device), labels=split.labels.to(device))


def resolve_defaults(cfg: RunConfig) -> RunConfig:
    """What the config leaves to the backbone: ``data.resolution=null`` -> its pretrained input size."""
    if cfg.data.resolution is not None:
        return cfg
    return replace(cfg, data=replace(cfg.data, resolution=pretrained_input_size(cfg.backbone.name)))


def training_budget(trainer: TrainerConfig, n_train: int) -> TrainerConfig:
    """Epochs (and validation cadence) for a training split of ``n_train`` images.

    ``min_steps`` makes the budget a number of optimizer steps, so 5 images per class and 500 both
    train adequately: epochs = max(epochs, ceil(min_steps / steps per epoch)). ``val_checks`` spreads
    about that many validation passes over the fit (always including the last epoch's when the
    epochs divide evenly; otherwise the final validation is re-run after the fit).
    """
    epochs = trainer.epochs
    if trainer.min_steps:
        steps_per_epoch = max(1, math.ceil(n_train / trainer.batch_size))
        epochs = max(epochs, math.ceil(trainer.min_steps / steps_per_epoch))
    every = max(1, epochs // trainer.val_checks) if trainer.val_checks else trainer.val_every_n_epochs
    if (epochs, every) == (trainer.epochs, trainer.val_every_n_epochs):
        return trainer
    return replace(trainer, epochs=epochs, val_every_n_epochs=every)


def prepare(cfg: RunConfig) -> PreparedTrial:
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    cfg = resolve_defaults(cfg)
    device = resolve_device(cfg.trainer.device)
    precision = resolve_precision(cfg.trainer.precision, device)
    L.seed_everything(cfg.seed, verbose=False)  # Python, NumPy, torch: once, before anything is built
    splits = load_splits(cfg.data, seed=cfg.seed)
    cfg = replace(cfg, trainer=training_budget(cfg.trainer, len(splits.train)))
    # again: model init must not depend on how much randomness the data used
    L.seed_everything(cfg.seed, verbose=False)
    model = build_model(cfg, class_names=splits.class_names)
    target = device.torch_device
    splits = replace(
        splits,
        train=_to_device(splits.train, target),
        val=_to_device(splits.val, target),
        test=_to_device(splits.test, target),
    )
    # channels_last: 1.6-2x faster CNN training steps on CPUs too (docs/benchmarks.md), same results.
    channels_last = cfg.trainer.channels_last and _is_cnn(model.network) and device.kind in ("cpu", "cuda")
    model.network.to(target)
    if channels_last:
        model.network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    prepared = PreparedTrial(
        cfg=cfg, device=device, precision=precision, splits=splits, model=model, channels_last=channels_last
    )
    prepared.prefix_split, prepared.cache_reason = _plan_prefix_cache(prepared)
    return prepared


def _plan_prefix_cache(prepared: PreparedTrial) -> tuple[PrefixSplit | None, str]:
    """Cache frozen-prefix activations when they are the same every epoch; otherwise say why not."""
    cfg, model = prepared.cfg, prepared.model
    if not model.phases:
        return None, "not cacheable: no training"
    first = model.phases[0]
    if not first.in_loop:  # the converged probe always fits on extracted features (lp_ft: its first phase)
        split = split_at_freeze_boundary(model.network.backbone, torch.empty(0))
        assert split is not None  # nothing trainable in the backbone: the whole backbone is the prefix
        if not cfg.trainer.cache_features:
            return split, "probe features extracted (not kept: trainer.cache_features=false)"
        return split, "frozen prefix = whole backbone" + (" (probe phase)" if len(model.phases) > 1 else "")
    if not cfg.trainer.cache_features:
        return None, "disabled (trainer.cache_features=false)"
    if len(model.phases) != 1:
        return None, "not cacheable: a later phase unfreezes"
    if first.freeze_depth == 0:
        return None, "not cacheable: nothing frozen"
    if cfg.data.augment:
        return None, "not cacheable: augmentation changes the inputs every epoch"
    probe = prepared.transform(train=False)(prepared.splits.train.images[:2])
    split = split_at_freeze_boundary(model.network.backbone, probe)
    if split is None:
        return None, "not cacheable: the backbone does not split into a verifiable chain"
    where = "whole backbone" if split.boundary < 0 else f"{split.boundary}/{split.units} chain units"
    return split, f"frozen prefix = {where}"
