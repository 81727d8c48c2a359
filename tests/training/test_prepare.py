"""prepare(): the memory format a CNN trains in, and that it does not change the answer."""

from __future__ import annotations

import pytest
import torch

from tlbench.config import load_config
from tlbench.run import train
from tlbench.training.prepare import batch_transform, prepare

TINY = [
    "data=digits",
    "data.n_per_class=20",
    "data.resolution=16",
    "backbone=random_init",
    "backbone.name=test_efficientnet",
    "strategy=scratch",
    "trainer.epochs=6",
    "trainer.min_steps=null",
    "trainer.val_checks=null",
    "trainer.batch_size=50",
    "trainer.compile=false",
    "tracking=disabled",
    "optimizer.lr=3e-3",
]


def test_a_cnn_trains_channels_last_on_the_cpu_unless_told_not_to() -> None:
    on = prepare(load_config(TINY))
    assert on.channels_last
    assert on.model.network.backbone.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    batch = batch_transform(on.model.mean, on.model.std, channels_last=on.channels_last)(
        on.splits.train.images[:4]
    )
    assert batch.is_contiguous(memory_format=torch.channels_last)
    off = prepare(load_config([*TINY, "trainer.channels_last=false"]))
    assert not off.channels_last
    transform = batch_transform(off.model.mean, off.model.std, channels_last=off.channels_last)
    assert transform(off.splits.train.images[:4]).is_contiguous()


def test_channels_last_gives_the_eager_nchw_answer_on_a_fixed_seed() -> None:
    nchw = train(load_config([*TINY, "trainer.channels_last=false"]))
    last = train(load_config(TINY))
    assert (nchw.tags["channels_last"], last.tags["channels_last"]) == ("false", "true")
    # same seed, data and steps; kernels sum in another order, so equal within float noise
    assert last.metrics["test/acc"] == pytest.approx(nchw.metrics["test/acc"], abs=0.03)
    assert last.metrics["train/loss"] == pytest.approx(nchw.metrics["train/loss"], rel=0.05, abs=0.02)
