"""Step 1 of a trial: everything it needs before the clock starts, resolved once: the data, the network,
and where and how they compute (device, precision, deterministic algorithms, memory format, threads).

All user errors (bad data, unknown backbone, out-of-range freeze depth) surface here, before an
MLflow run is created, so a mistyped command leaves no half-filled run behind.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import lightning as L
import torch

from tlbench.config.schema import RunConfig
from tlbench.cost.device import (
    DeviceInfo,
    resolve_deterministic,
    resolve_device,
    resolve_precision,
    use_channels_last,
)
from tlbench.cost.threads import ThreadPlan, trial_threads
from tlbench.data import DataSplits, TensorSplit, load_splits
from tlbench.models.network import BuiltModel, build_model, pretrained_input_size, training_budget


@dataclass(frozen=True)
class Trial:
    """What :func:`prepare` resolved and built: each later step takes the values it uses from it."""

    cfg: RunConfig  # resolved: data.resolution and the epochs the step budget implies
    splits: DataSplits  # tensors already on the training device
    model: BuiltModel  # on the device, in the memory format it trains in
    device: DeviceInfo
    precision: str  # Lightning's precision: "32", "bf16-mixed", ...
    deterministic: bool | str  # Lightning's ``deterministic`` for ``trainer.deterministic`` on this device
    channels_last: bool  # the network and its batches in NHWC
    threads: ThreadPlan  # torch's intra-op threads for this trial, and why


def resolve_defaults(cfg: RunConfig) -> RunConfig:
    """What the config leaves to the backbone: ``data.resolution=null`` -> its pretrained input size."""
    if cfg.data.resolution is not None:
        return cfg
    return replace(cfg, data=replace(cfg.data, resolution=pretrained_input_size(cfg.backbone.name)))


def prepare(cfg: RunConfig) -> Trial:
    """Seed, data and the network, then where and how they compute: ``cfg`` resolved, and what it built."""
    cfg = resolve_defaults(cfg)
    L.seed_everything(cfg.seed, verbose=False)  # Python, NumPy, torch: once, before anything is built
    splits = load_splits(cfg.data, seed=cfg.seed)
    cfg = replace(cfg, trainer=training_budget(cfg.trainer, len(splits.train)))
    # again: model init must not depend on how much randomness the data used
    L.seed_everything(cfg.seed, verbose=False)
    model = build_model(cfg, class_names=splits.class_names)
    trainer = cfg.trainer
    device = resolve_device(trainer.device)
    precision = resolve_precision(trainer.precision, device)
    deterministic = resolve_deterministic(trainer.deterministic, device)
    channels_last = use_channels_last(model.network, requested=trainer.channels_last, device=device)
    threads = trial_threads(trainer.num_threads)  # torch's intra-op threads from here on
    target = device.torch_device
    splits = replace(
        splits,
        train=TensorSplit(splits.train.images.to(target), splits.train.labels.to(target)),
        val=TensorSplit(splits.val.images.to(target), splits.val.labels.to(target)),
        test=TensorSplit(splits.test.images.to(target), splits.test.labels.to(target)),
    )
    model.network.to(target)
    if channels_last:
        model.network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return Trial(cfg, splits, model, device, precision, deterministic, channels_last, threads)
