"""Everything a trial needs before the clock starts: seed, device, data on the device, the network.

All user errors (bad data, unknown backbone, out-of-range freeze depth) surface here, before an
MLflow run is created, so a mistyped command leaves no half-filled run behind.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import NamedTuple

import lightning as L
import torch
from torch import nn

from tlbench.config.schema import RunConfig, TrainerConfig
from tlbench.cost.device import DeviceInfo, resolve_device, resolve_precision
from tlbench.data import BatchTransform, DataSplits, TensorSplit, load_splits
from tlbench.models.backbone import pretrained_input_size
from tlbench.models.network import BuiltModel, build_model

Transform = Callable[[torch.Tensor], torch.Tensor]


class Prepared(NamedTuple):
    """What :func:`prepare` built, unpacked by its caller at once (it is no bag handed on)."""

    cfg: RunConfig  # resolved: data.resolution and the epochs the step budget implies
    device: DeviceInfo
    precision: str
    splits: DataSplits  # tensors already on the training device
    model: BuiltModel  # on the device, in the memory format it trains in
    channels_last: bool


def batch_transform(
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    *,
    channels_last: bool,
    generator: torch.Generator | None = None,
) -> Transform:
    """Per-batch work on the device: augment (when ``generator`` is given), normalize, memory format."""
    base = BatchTransform(mean=mean, std=std, generator=generator)
    if not channels_last:
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


def prepare(cfg: RunConfig) -> Prepared:
    """Seed, device, data on the device and the network: ``cfg`` resolved, and what it built."""
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
    return Prepared(cfg, device, precision, splits, model, channels_last)
