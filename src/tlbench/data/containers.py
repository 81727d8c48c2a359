"""The tensors a run trains and evaluates on, what a dataset source hands over, and where they came from."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field

import torch

from tlbench.config.schema import DataConfig


@dataclass(frozen=True, eq=False)  # tensors have no single truth value: compare by identity
class TensorSplit:
    """Images and labels of one split, kept as uint8 so a whole dataset fits on the device.

    Attributes:
        images: uint8 ``[N, C, H, W]`` with ``C`` in {1, 3}; normalisation happens per batch.
        labels: int64 ``[N]`` class indices into :attr:`DataSplits.class_names`.
    """

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
    """Train / validation / test tensors of one run, plus what identifies them.

    Attributes:
        train: The ``n_per_class`` subset drawn from the train pool with the run's seed.
        val: Fixed by ``split_seed`` alone; never changes with ``n_per_class`` or the seed.
        test: Fixed like ``val``.
        class_names: Index ``i`` of a label is ``class_names[i]``.
        pool_size: Size of the train pool the subset was drawn from.
        description: One line for logs: dataset, source path, split sizes and where each came from.
        fingerprint: Short sha256 of dataset content, preprocessing, resolution, split parameters and
            the exact train subset, so feature caches can be keyed on it.
        val_in_train: ``train`` also holds every ``val`` image (``data.train_on_val``: a winner's
            retraining), so validation can measure and choose nothing.
    """

    train: TensorSplit
    val: TensorSplit
    test: TensorSplit
    class_names: tuple[str, ...]
    pool_size: int
    description: str
    fingerprint: str
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
    """Decoded pools of one dataset at the target resolution.

    ``val`` and ``test`` are ``None`` when the source has no such split of its own; the split logic
    then carves them from ``train`` with ``split_seed``.

    Attributes:
        train: The source's training pool (or its only pool).
        val: The source's own validation split, if any.
        test: The source's own test split, if any.
        class_names: Label ``i`` is ``class_names[i]``.
        location: Where the data was read from (a path, or the package that generated it).
        origins: Split name -> where that split's samples came from, for the run description.
    """

    train: TensorSplit
    val: TensorSplit | None
    test: TensorSplit | None
    class_names: tuple[str, ...]
    location: str
    origins: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    """A dataset source: how to load it, and what decides whether a cached load is still valid.

    Attributes:
        load: Reads and decodes the dataset for a config.
        cache_key: Cheap key of everything ``load``'s result depends on (paths, file times,
            resolution), so a sweep in one process decodes each dataset once.
    """

    load: Callable[[DataConfig], SourceData]
    cache_key: Callable[[DataConfig], Hashable]
