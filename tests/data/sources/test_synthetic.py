from __future__ import annotations

import pytest
import torch
from torch import nn

from tlbench.config.schema import DataConfig, DatasetName
from tlbench.data.sources.synthetic import generate_patterns, load_synthetic_source
from tlbench.data.splits import stratified_split


@pytest.mark.parametrize(("classes", "per_class", "resolution"), [(2, 3, 8), (4, 60, 32), (5, 10, 64)])
def test_synthetic_shapes(classes: int, per_class: int, resolution: int) -> None:
    cfg = DataConfig(
        name=DatasetName.synthetic, num_classes=classes, samples_per_class=per_class, resolution=resolution
    )
    data = load_synthetic_source(cfg)
    # classes x samples RGB uint8 images, balanced labels, no own splits
    assert data.train.images.shape == (classes * per_class, 3, resolution, resolution)
    assert torch.bincount(data.train.labels).tolist() == [per_class] * classes
    assert len(data.class_names) == classes and data.val is None and data.test is None


def test_synthetic_is_seeded_by_split_seed() -> None:
    images = [
        generate_patterns(num_classes=3, samples_per_class=4, resolution=16, seed=s)[0] for s in (0, 0, 1)
    ]
    # same seed, same images; another seed, other images
    assert torch.equal(images[0], images[1]) and not torch.equal(images[0], images[2])


def test_tiny_cnn_beats_chance() -> None:
    torch.manual_seed(0)
    images, labels = generate_patterns(num_classes=4, samples_per_class=40, resolution=16, seed=0)
    val, train = (torch.from_numpy(i) for i in stratified_split(labels.numpy(), fractions=(0.25,), seed=0))
    x = images.float() / 127.5 - 1
    model = nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    for _ in range(40):  # plain gradient descent: torch.optim would import torch._dynamo (seconds)
        model.zero_grad()
        nn.functional.cross_entropy(model(x[train]), labels[train]).backward()
        with torch.no_grad():
            for parameter in model.parameters():
                assert parameter.grad is not None
                parameter.sub_(0.5 * parameter.grad)
    with torch.no_grad():
        accuracy = (model(x[val]).argmax(1) == labels[val]).float().mean().item()
    # four classes: chance is 0.25; the patterns are learnable well above it
    assert accuracy > 0.6
