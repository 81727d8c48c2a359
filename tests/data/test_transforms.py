from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tlbench.data import augment, normalize
from tlbench.data.transforms import BatchTransform

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def random_batch(count: int = 4, channels: int = 3, size: int = 16, *, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, channels, size, size), dtype=torch.uint8, generator=generator)


def test_normalize_matches_the_formula() -> None:
    batch = random_batch()
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = normalize(batch, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    # float32 (x / 255 - mean) / std per channel
    assert out.dtype == torch.float32 and torch.allclose(out, (batch / 255.0 - mean) / std, atol=1e-5)


@pytest.mark.parametrize(("value", "expected"), [(0, -1.0), (255, 1.0)])
def test_normalize_extremes(value: int, expected: float) -> None:
    out = normalize(torch.full((1, 3, 2, 2), value, dtype=torch.uint8), mean=(0.5,) * 3, std=(0.5,) * 3)
    # with mean = std = 0.5, black is -1 and white is +1
    assert torch.allclose(out, torch.full_like(out, expected))


def test_normalize_expands_grey_to_three_channels() -> None:
    grey = random_batch(channels=1)
    out = normalize(grey, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    rgb = normalize(grey.expand(-1, 3, -1, -1), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    # ImageNet backbones want RGB: a grey batch is normalised as if its channel were repeated
    assert out.shape == (4, 3, 16, 16) and torch.equal(out, rgb)


@pytest.mark.parametrize(
    ("batch", "mean", "pattern"),
    [
        (torch.zeros(1, 3, 2, 2), IMAGENET_MEAN, "uint8"),  # already-float input is a caller bug
        (torch.zeros(1, 2, 2, 2, dtype=torch.uint8), IMAGENET_MEAN, "uint8"),  # 2 channels
        (torch.zeros(1, 3, 2, 2, dtype=torch.uint8), (0.5,), "3 values"),  # mean of the wrong length
    ],
)
def test_normalize_rejects_bad_input(batch: torch.Tensor, mean: tuple[float, ...], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        normalize(batch, mean=mean, std=IMAGENET_STD)


def reference_augment(batch: torch.Tensor, seed: int) -> torch.Tensor:
    """Per-sample loop with torch's own reflect padding, drawing randoms in augment's order."""
    generator = torch.Generator().manual_seed(seed)
    count, _, height, width = batch.shape
    pad_y, pad_x = height // 8, width // 8
    dy = torch.randint(0, 2 * pad_y + 1, (count, 1), generator=generator)
    dx = torch.randint(0, 2 * pad_x + 1, (count, 1), generator=generator)
    flip = torch.rand((count, 1), generator=generator) < 0.5
    padded = F.pad(batch.float(), (pad_x, pad_x, pad_y, pad_y), mode="reflect")
    out = []
    for i in range(count):
        crop = padded[i, :, int(dy[i]) : int(dy[i]) + height, int(dx[i]) : int(dx[i]) + width]
        out.append(crop.flip(-1) if flip[i] else crop)
    return torch.stack(out).to(batch.dtype)


@pytest.mark.parametrize("size", [8, 16, 33])
def test_augment_equals_pad_crop_flip(size: int) -> None:
    batch = random_batch(count=16, size=size)
    out = augment(batch, generator=torch.Generator().manual_seed(5))
    # the vectorised gather equals reflect-pad by size // 8, random crop, then random flip
    assert torch.equal(out, reference_augment(batch, seed=5))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_augment_keeps_shape_and_dtype(dtype: torch.dtype) -> None:
    batch = random_batch(channels=1).to(dtype)
    out = augment(batch, generator=torch.Generator().manual_seed(0))
    # same shape and dtype: it runs before (uint8) or after (float) normalisation alike
    assert out.shape == batch.shape and out.dtype == dtype


def test_augment_is_seeded() -> None:
    batch = random_batch(count=32)
    first, again, other = (augment(batch, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2))
    # same seed, same augmentation; another seed, another one; the batch itself is changed
    assert torch.equal(first, again) and not torch.equal(first, other) and not torch.equal(first, batch)


def test_batch_transform_augments_only_with_a_generator() -> None:
    batch = random_batch()
    plain = BatchTransform(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    augmented = BatchTransform(
        mean=IMAGENET_MEAN, std=IMAGENET_STD, generator=torch.Generator().manual_seed(0)
    )
    # evaluation (no generator) only normalises; training also augments
    assert torch.equal(plain(batch), normalize(batch, mean=IMAGENET_MEAN, std=IMAGENET_STD))
    assert not torch.equal(augmented(batch), plain(batch))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_transforms_run_on_the_gpu_like_on_the_cpu() -> None:
    batch = random_batch(count=8)
    on_gpu = augment(batch.cuda(), generator=torch.Generator().manual_seed(3))
    # CPU generator draws moved to the device: identical results on either device
    assert torch.equal(on_gpu.cpu(), augment(batch, generator=torch.Generator().manual_seed(3)))
    assert normalize(batch.cuda(), mean=IMAGENET_MEAN, std=IMAGENET_STD).device.type == "cuda"
