from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tlbench.data import BatchTransform, InMemoryLoader, augment, normalize


def make(count: int = 10, **kwargs: object) -> InMemoryLoader:
    images = torch.arange(count, dtype=torch.uint8).view(count, 1, 1, 1).expand(count, 3, 2, 2).contiguous()
    return InMemoryLoader(images, torch.arange(count), **{"batch_size": 4, **kwargs})  # type: ignore[arg-type]


def epoch_labels(loader: InMemoryLoader) -> list[int]:
    return [label for _, labels in loader for label in labels.tolist()]


@pytest.mark.parametrize(("count", "batch_size", "batches"), [(10, 4, 3), (8, 4, 2), (3, 8, 1), (0, 4, 0)])
def test_len_counts_batches(count: int, batch_size: int, batches: int) -> None:
    loader = make(count, batch_size=batch_size)
    # len is the number of batches one pass yields
    assert len(loader) == batches == sum(1 for _ in loader) and loader.num_samples == count


@pytest.mark.parametrize("shuffle", [False, True])
def test_each_epoch_covers_every_sample_once(shuffle: bool) -> None:
    loader = make(10, shuffle=shuffle, seed=3)
    # every sample exactly once per pass; the last batch holds the remainder
    for _ in range(3):
        assert sorted(epoch_labels(loader)) == list(range(10))
    assert [len(y) for _, y in loader] == [4, 4, 2]


def test_images_stay_paired_with_labels() -> None:
    # the image drawn for a label is that label's image, in shuffled order too
    for images, labels in make(10, shuffle=True, seed=1):
        assert torch.equal(images[:, 0, 0, 0].long(), labels)


def test_unshuffled_order_is_index_order() -> None:
    # evaluation passes are in dataset order
    assert epoch_labels(make(10)) == list(range(10))


def test_reshuffles_each_epoch_deterministically() -> None:
    first, second = make(50, shuffle=True, seed=7), make(50, shuffle=True, seed=7)
    epochs = [epoch_labels(first) for _ in range(3)]
    # consecutive epochs differ; a loader with the same seed repeats the same sequence of epochs
    assert epochs[0] != epochs[1] != epochs[2]
    assert epochs == [epoch_labels(second) for _ in range(3)]
    assert epochs[0] != epoch_labels(make(50, shuffle=True, seed=8))


def test_transform_is_applied_per_batch() -> None:
    loader = make(6, transform=lambda batch: batch.float() / 255)
    images, _ = next(iter(loader))
    # the callable receives the uint8 batch and its output is yielded
    assert images.dtype == torch.float32 and images.max() <= 1


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [({"batch_size": 0}, "batch_size"), ({"labels": torch.arange(3)}, "10 images but 3 labels")],
)
def test_rejects_bad_arguments(kwargs: dict, pattern: str) -> None:
    images = torch.zeros(10, 3, 2, 2, dtype=torch.uint8)
    arguments = {"labels": torch.arange(10), "batch_size": 2, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        InMemoryLoader(images, arguments.pop("labels"), **arguments)


@pytest.mark.slow
def test_lightning_accepts_it_as_a_dataloader() -> None:
    import lightning  # imported here: it takes seconds, and only this test needs it
    from torch import nn

    class Probe(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(3 * 2 * 2, 10)
            self.batch_sizes: list[int] = []

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
            images, labels = batch
            self.batch_sizes.append(len(labels))
            return nn.functional.cross_entropy(self.head(images.float().flatten(1)), labels)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    probe = Probe()
    trainer = lightning.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(probe, train_dataloaders=make(10, shuffle=True))
    # Lightning takes the plain iterable, sizes the epoch from len() and sees every batch
    assert trainer.num_training_batches == 3 and probe.batch_sizes == [4, 4, 2] * 2


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
