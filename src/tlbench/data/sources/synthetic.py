"""Generated class-dependent patterns: instant, no I/O, for tests and smoke runs.

Each class is a sinusoidal grating with its own orientation, frequency and colouring, on a
class-tinted background; every sample gets a random phase (so position is no cue) and pixel noise.
A small CNN separates the classes well above chance within a few epochs.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

import torch

from tlbench.config.schema import DataConfig
from tlbench.data.containers import TensorSplit
from tlbench.data.sources.base import Source, SourceData

_GRATING_AMPLITUDE = 60.0
_TINT_AMPLITUDE = 20.0
_NOISE_STD = 30.0


def generate_patterns(
    *, num_classes: int, samples_per_class: int, resolution: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``[N, 3, R, R]`` images and int64 labels, class-major, fully determined by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    classes = torch.arange(num_classes)
    angles = math.pi * classes / num_classes
    frequencies = 2.0 + (classes % 3).float()
    colours = torch.rand(num_classes, 3, generator=generator) * 2 - 1
    tints = 128.0 + _TINT_AMPLITUDE * (torch.rand(num_classes, 3, generator=generator) * 2 - 1)

    labels = classes.repeat_interleave(samples_per_class)
    count = labels.numel()
    axis = torch.arange(resolution, dtype=torch.float32) / resolution
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    direction = torch.cos(angles)[labels, None, None] * x + torch.sin(angles)[labels, None, None] * y
    phase = torch.rand(count, 1, 1, generator=generator) * 2 * math.pi
    wave = torch.sin(2 * math.pi * frequencies[labels, None, None] * direction + phase)
    images = (
        tints[labels, :, None, None] + _GRATING_AMPLITUDE * colours[labels, :, None, None] * wave[:, None]
    )
    images += _NOISE_STD * torch.randn(images.shape, generator=generator)
    return images.round_().clamp_(0, 255).to(torch.uint8), labels


def load_synthetic_source(cfg: DataConfig) -> SourceData:
    """``num_classes`` x ``samples_per_class`` patterns seeded by ``split_seed``; no own splits."""
    images, labels = generate_patterns(
        num_classes=cfg.num_classes,
        samples_per_class=cfg.samples_per_class,
        resolution=cfg.size,
        seed=cfg.split_seed,
    )
    return SourceData(
        train=TensorSplit(images, labels),
        val=None,
        test=None,
        class_names=tuple(f"pattern_{index}" for index in range(cfg.num_classes)),
        location=f"generated (split_seed={cfg.split_seed})",
    )


def _cache_key(cfg: DataConfig) -> Hashable:
    return (cfg.size, cfg.num_classes, cfg.samples_per_class, cfg.split_seed)


SOURCE = Source(load=load_synthetic_source, cache_key=_cache_key)
