"""Batches straight from tensors already on the training device: no workers, no per-sample work.

Small transfer-learning datasets fit in device memory as uint8, where indexing a batch costs
microseconds; a ``DataLoader`` with worker processes would spend more on collation than the model
spends on the batch. Lightning accepts any iterable with ``__len__`` as a dataloader.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

BatchFn = Callable[[torch.Tensor], torch.Tensor]


class InMemoryLoader:
    """Yields ``(transform(images[idx]), labels[idx])`` batches.

    With ``shuffle`` every pass draws a fresh permutation from a generator seeded once, so epoch
    ``k`` has the same order in every run with the same seed, and consecutive epochs differ.

    Attributes:
        num_samples: Samples per full pass (including those of a dropped last batch).
        batch_size: Samples per batch (the last one may be smaller unless ``drop_last``).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        transform: BatchFn | None = None,
        drop_last: bool = False,
    ) -> None:
        """Wrap ``images`` and ``labels`` (same length, same device) for batched iteration.

        Args:
            images: ``[N, ...]`` tensor, usually uint8 ``[N, C, H, W]``.
            labels: ``[N]`` targets.
            batch_size: Samples per batch.
            shuffle: Reshuffle at the start of every pass.
            seed: Seeds the shuffling generator.
            transform: Applied to each image batch (e.g. :class:`tlbench.data.transforms.BatchTransform`).
            drop_last: Skip a final incomplete batch.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size=}")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        if images.device != labels.device:
            raise ValueError(
                f"images on {images.device} but labels on {labels.device}; move both to one device"
            )
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.transform = transform
        self.drop_last = drop_last
        self.num_samples = int(labels.shape[0])
        self._generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device = self.labels.device
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=self._generator).to(device)
        else:
            order = None
        for batch in range(len(self)):
            start = batch * self.batch_size
            stop = min(start + self.batch_size, self.num_samples)
            if order is None:  # contiguous slices are views: no copy for evaluation passes
                images, labels = self.images[start:stop], self.labels[start:stop]
            else:
                index = order[start:stop]
                images, labels = self.images[index], self.labels[index]
            yield (self.transform(images) if self.transform else images), labels
