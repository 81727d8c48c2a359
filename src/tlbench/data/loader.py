"""Batches straight from tensors already on the training device, augmented and normalised per batch.

Small transfer-learning datasets fit in device memory as uint8, where indexing a batch costs
microseconds; a ``DataLoader`` with workers would spend more on collation than the model on the batch
(Lightning accepts any iterable with ``__len__``). Augmentation (``data.augment``, off by default: with
few images and frozen backbones it mostly adds cost, and it disables feature caching) runs on the uint8
batch before :func:`normalize`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

_GREY = 1
_RGB = 3


def normalize(batch: torch.Tensor, *, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``[N, C in (1, 3), H, W]`` -> float32 ``(x / 255 - mean) / std`` with 3 channels (grey is
    repeated: ImageNet backbones expect RGB); ``mean``, ``std``: the backbone's (timm ``pretrained_cfg``)."""
    if batch.dtype != torch.uint8 or batch.dim() != 4 or batch.shape[1] not in (_GREY, _RGB):
        raise ValueError(f"expected uint8 [N, 1 or 3, H, W], got {batch.dtype} {tuple(batch.shape)}")
    if len(mean) != _RGB or len(std) != _RGB:
        raise ValueError(f"mean and std need 3 values each, got {mean=} {std=}")
    mean_t = torch.tensor(mean, dtype=torch.float32, device=batch.device).view(1, _RGB, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=batch.device).view(1, _RGB, 1, 1)
    # (x / 255 - mean) / std == x * (1 / (255 std)) - mean / std: one multiply-add pass
    scale, shift = 1.0 / (255.0 * std_t), mean_t / std_t
    pixels = batch.float()
    if pixels.shape[1] == _GREY:
        pixels = pixels.expand(-1, _RGB, -1, -1)
    return torch.addcmul(-shift, pixels, scale)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Reflect out-of-range indices back inside ``[0, size)`` (edge pixel not repeated, like torch's pad)."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


# Not torchvision's v2 RandomHorizontalFlip/RandomCrop: they draw one flip and one offset per call (per
# batch here); this draws them per sample, on the batch's device, in one gather.
def augment(batch: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip, then pad by ``size // 8`` (reflect) and crop back, per sample, as one
    gather (any dtype, one pass). ``generator`` may live on any device (draws move to the batch's), so
    a seed gives the same augmentation on CPU and GPU."""
    count, channels, height, width = batch.shape
    pad_y, pad_x = height // 8, width // 8
    shape = (count, 1)
    dy = torch.randint(0, 2 * pad_y + 1, shape, generator=generator, device=generator.device)
    dx = torch.randint(0, 2 * pad_x + 1, shape, generator=generator, device=generator.device)
    flip = torch.rand(shape, generator=generator, device=generator.device) < 0.5
    dy, dx, flip = dy.to(batch.device), dx.to(batch.device), flip.to(batch.device)
    rows = _reflect(torch.arange(height, device=batch.device) + dy - pad_y, height)
    cols = torch.arange(width, device=batch.device)
    cols = torch.where(flip, width - 1 - cols, cols)
    cols = _reflect(cols + dx - pad_x, width)
    # rows then columns: two gathers on index tensors broadcast over the channel dimension
    gathered = batch.gather(2, rows.view(count, 1, height, 1).expand(count, channels, height, width))
    return gathered.gather(3, cols.view(count, 1, 1, width).expand(count, channels, height, width))


@dataclass(frozen=True)
class BatchTransform:
    """What the loaders apply to each batch: augment (with ``generator``: training only), then normalize."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    generator: torch.Generator | None = None

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if self.generator is not None:
            batch = augment(batch, generator=self.generator)
        return normalize(batch, mean=self.mean, std=self.std)


class InMemoryLoader:
    """Yields ``(transform(images[idx]), labels[idx])`` batches of ``images`` ``[N, ...]`` and ``labels``
    ``[N]`` (one device). With ``shuffle`` every pass draws a fresh permutation from a generator seeded
    once with ``seed``, so epoch ``k`` has the same order in every run with that seed."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
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
        self.num_samples = int(labels.shape[0])
        self._generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = None
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=self._generator).to(self.labels.device)
        for batch in range(len(self)):
            start = batch * self.batch_size
            stop = min(start + self.batch_size, self.num_samples)
            if order is None:  # contiguous slices are views: no copy for evaluation passes
                images, labels = self.images[start:stop], self.labels[start:stop]
            else:
                index = order[start:stop]
                images, labels = self.images[index], self.labels[index]
            yield (self.transform(images) if self.transform else images), labels
