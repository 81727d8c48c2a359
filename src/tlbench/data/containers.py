"""The tensors a run trains and evaluates on, what a dataset source hands over, and where they came from."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field

import torch

from tlbench.config.schema import DataConfig


@dataclass(frozen=True, eq=False)  # tensors have no single truth value: compare by identity
class TensorSplit:
    """Images (uint8 ``[N, C in (1, 3), H, W]``: a whole dataset fits on the device; normalisation happens
    per batch) and labels (int64 ``[N]``, indices into the class names) of one split."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"images must be uint8 [N, C in (1, 3), H, W]; got {images.dtype} {tuple(images.shape)}"
            )
        if labels.dtype != torch.int64 or labels.dim() != 1:
            raise ValueError(f"labels must be int64 [N]; got {labels.dtype} {tuple(labels.shape)}")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, indices: torch.Tensor) -> TensorSplit:
        """The samples at ``indices``, in that order (a copy, so the source pool stays untouched)."""
        return TensorSplit(self.images[indices], self.labels[indices])


@dataclass(frozen=True, eq=False)
class DataSplits:
    """Train / validation / test tensors of one run, plus what identifies them."""

    train: TensorSplit  # the n_per_class subset drawn from the train pool with the run's seed
    val: TensorSplit  # fixed by split_seed alone, like test: never changes with n_per_class or the seed
    test: TensorSplit
    class_names: tuple[str, ...]
    pool_size: int  # the train pool the subset was drawn from
    description: str  # one line for logs: dataset, source path, split sizes and where each came from
    # short sha256 of content, preprocessing, resolution, split parameters and the exact train subset
    fingerprint: str
    # train also holds every val image (data.train_on_val): validation can measure and choose nothing
    val_in_train: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        """1 for grayscale sources (expanded to 3 by :func:`tlbench.data.normalize`), else 3."""
        return int(self.train.images.shape[1])


@dataclass(frozen=True)
class SourceData:
    """Decoded pools of one dataset at the target resolution; ``val`` / ``test`` are None when the source
    has no such split, and are then carved from ``train`` with ``split_seed``."""

    train: TensorSplit
    val: TensorSplit | None
    test: TensorSplit | None
    class_names: tuple[str, ...]
    location: str  # where the data was read from (a path, or the package that generated it)
    origins: Mapping[str, str] = field(default_factory=dict)  # split -> where its samples came from


@dataclass(frozen=True)
class Source:
    """How to load a dataset, and a cheap key of everything the load depends on (paths, file times,
    resolution), so a sweep in one process decodes each dataset once."""

    load: Callable[[DataConfig], SourceData]
    cache_key: Callable[[DataConfig], Hashable]
