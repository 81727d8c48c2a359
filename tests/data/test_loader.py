from __future__ import annotations

import pytest
import torch

from tlbench.data import InMemoryLoader


def make(count: int = 10, **kwargs: object) -> InMemoryLoader:
    images = torch.arange(count, dtype=torch.uint8).view(count, 1, 1, 1).expand(count, 3, 2, 2).contiguous()
    return InMemoryLoader(images, torch.arange(count), **{"batch_size": 4, **kwargs})  # type: ignore[arg-type]


def epoch_labels(loader: InMemoryLoader) -> list[int]:
    return [label for _, labels in loader for label in labels.tolist()]


@pytest.mark.parametrize(
    ("count", "batch_size", "drop_last", "batches"),
    [
        (10, 4, False, 3),
        (10, 4, True, 2),
        (8, 4, False, 2),
        (3, 8, False, 1),
        (3, 8, True, 0),
        (0, 4, False, 0),
    ],
)
def test_len_counts_batches(count: int, batch_size: int, drop_last: bool, batches: int) -> None:
    loader = make(count, batch_size=batch_size, drop_last=drop_last)
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
