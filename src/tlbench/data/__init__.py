"""Data layer: dataset sources, fixed evaluation splits, seeded training subsets, batch transforms
(``load_splits(cfg.data, seed=cfg.seed)``, then an :class:`InMemoryLoader` with a :class:`BatchTransform`)."""

from __future__ import annotations

from tlbench.data.load import DataSplits, clear_source_cache, load_splits
from tlbench.data.loader import BatchTransform, InMemoryLoader, augment, normalize
from tlbench.data.sources import TensorSplit

__all__ = [
    "BatchTransform",
    "DataSplits",
    "InMemoryLoader",
    "TensorSplit",
    "augment",
    "clear_source_cache",
    "load_splits",
    "normalize",
]
