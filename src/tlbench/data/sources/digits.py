"""scikit-learn's 8x8 handwritten digits: tiny, embedded in the package, always available."""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import torch

from tlbench.config.schema import DataConfig
from tlbench.data.containers import TensorSplit
from tlbench.data.resize import resize_square
from tlbench.data.sources.base import Source, SourceData

_MAX_VALUE = 16  # load_digits stores 4-bit intensities 0..16


def load_digits_source(cfg: DataConfig) -> SourceData:
    """1,797 grey 8x8 digits, scaled from 0..16 to 0..255 and resized; no splits of their own."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.rint(bunch.images * (255.0 / _MAX_VALUE)).clip(0, 255).astype(np.uint8)
    images = torch.from_numpy(pixels).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    return SourceData(
        train=TensorSplit(resize_square(images, resolution=cfg.size), labels),
        val=None,
        test=None,
        class_names=tuple(str(name) for name in bunch.target_names),
        location="sklearn.datasets.load_digits",
    )


def _cache_key(cfg: DataConfig) -> Hashable:
    return (cfg.size,)


SOURCE = Source(load=load_digits_source, cache_key=_cache_key)
