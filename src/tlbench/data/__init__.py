"""Data layer: dataset sources, fixed evaluation splits, seeded training subsets, batch transforms
(``load_splits(cfg.data, seed=cfg.seed)``, then an :class:`InMemoryLoader` with a :class:`BatchTransform`)."""

from __future__ import annotations

from tlbench.data.load import (
    DataSplits,
    cap_per_class,
    clear_source_cache,
    load_splits,
    stratified_split,
    stratified_subset,
)
from tlbench.data.loader import BatchTransform, InMemoryLoader, augment, normalize
from tlbench.data.sources import TensorSplit

__all__ = [
    "BatchTransform",
    "DataSplits",
    "InMemoryLoader",
    "TensorSplit",
    "augment",
    "cap_per_class",
    "clear_source_cache",
    "load_splits",
    "normalize",
    "stratified_split",
    "stratified_subset",
]
