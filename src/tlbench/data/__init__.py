"""Data layer: dataset sources, fixed evaluation splits, seeded training subsets, batch transforms
(``load_splits(cfg.data, seed=cfg.seed)``, then an :class:`InMemoryLoader` with a :class:`BatchTransform`)."""

from __future__ import annotations

from tlbench.data.containers import DataSplits, TensorSplit
from tlbench.data.load import clear_source_cache, load_splits
from tlbench.data.loader import BatchTransform, InMemoryLoader, augment, normalize
from tlbench.data.splits import cap_per_class, stratified_split, stratified_subset

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
