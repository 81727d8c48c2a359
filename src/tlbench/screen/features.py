"""Frozen features of one backbone for the screen: the trial pipeline's own data, model and feature cache.

The screen prepares a ``linear_probe`` trial (so data, splits, normalisation and resolution are exactly
what training sees) and reads the pooled backbone features of the train and validation splits through
the content-keyed feature cache: a later linear probe on the same data reuses them, and so does a
second screen. The test split is capped at one image per class, because the screen never looks at
test data and should not pay to extract it (the cap changes neither the train pool nor validation).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from tlbench.cost.device import DeviceInfo
from tlbench.errors import ModelError
from tlbench.training.inputs import cached_inputs, feature_cache
from tlbench.training.prepare import PreparedTrial

# What every screen forces on top of the user's overrides (the later entries win in Hydra).
SCREEN_OVERRIDES = (
    "strategy=linear_probe",
    "data.augment=false",
    "trainer.cache_features=true",
    "data.max_test_per_class=1",
    "tracking=disabled",
)


@dataclass(frozen=True)
class ScreenFeatures:
    """Features (float64, on the CPU) and labels of the train pool and the validation split."""

    train: NDArray[np.float64]
    train_labels: NDArray[np.int64]
    val: NDArray[np.float64]
    val_labels: NDArray[np.int64]
    class_names: tuple[str, ...]
    resolution: int  # the side in pixels the images were fed at
    forward_flops: float  # forward FLOPs of train + val extraction (whether computed now or reused)
    extract_seconds: float  # wall time of this call's extraction (about 0 on a cache hit)
    standalone_seconds: float  # what the extraction cost when it was computed (this run or earlier)
    cache_status: str  # miss | hit | partial
    device: DeviceInfo
    fingerprint: str


def _as_numpy(tensor: torch.Tensor) -> NDArray[np.float64]:
    return np.asarray(tensor.detach().float().cpu().numpy(), dtype=np.float64)


def _labels(tensor: torch.Tensor) -> NDArray[np.int64]:
    return np.asarray(tensor.detach().cpu().numpy(), dtype=np.int64)


def extract(prepared: PreparedTrial) -> ScreenFeatures:
    """Pooled features of ``prepared`` (a linear-probe trial) through the feature cache."""
    split = prepared.prefix_split
    if split is None:  # linear_probe with caching on always splits; anything else is a bug upstream
        raise ModelError(f"the screen cannot cache features for this backbone: {prepared.cache_reason}")
    start = time.perf_counter()
    inputs = cached_inputs(prepared, split, feature_cache(prepared.cfg.trainer))
    if prepared.device.is_gpu:
        torch.cuda.synchronize(prepared.device.torch_device)
    seconds = time.perf_counter() - start
    use = inputs.cache
    flops = sum(use.computed_flops.get(s, 0.0) + use.reused_flops.get(s, 0.0) for s in ("train", "val"))
    (train, train_y), (val, val_y) = inputs.data["train"], inputs.data["val"]
    return ScreenFeatures(
        train=_as_numpy(train),
        train_labels=_labels(train_y),
        val=_as_numpy(val),
        val_labels=_labels(val_y),
        class_names=tuple(prepared.splits.class_names),
        resolution=int(prepared.splits.train.images.shape[-1]),
        forward_flops=flops,
        extract_seconds=seconds,
        standalone_seconds=seconds + use.reused_seconds,
        cache_status=use.status,
        device=prepared.device,
        fingerprint=str(prepared.splits.fingerprint),
    )
