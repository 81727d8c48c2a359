"""prepare(): the memory format a CNN trains in (and that it does not change the answer), the steps a
trial trains, and defaults resolved from the backbone."""

from __future__ import annotations

import math

import pytest
import torch

from tlbench.config import load_config
from tlbench.errors import ConfigError
from tlbench.run import train
from tlbench.training.inputs import batch_transform
from tlbench.training.prepare import prepare, resolve_defaults

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


def test_a_trial_trains_the_steps_it_was_given() -> None:
    # 16 synthetic images at batch 8 and min_steps 10: 5 epochs, and the epochs param says so
    result = train(
        load_config([
            "data=synthetic", "data.samples_per_class=10", "data.num_classes=2", "trainer=quick",
            "trainer.batch_size=8", "trainer.epochs=1", "trainer.min_steps=10", "strategy=full_finetune",
            "tracking=disabled", "trainer.count_flops=false",
        ])
    )  # fmt: skip
    n_train = int(result.params["n_train"])
    steps_per_epoch = math.ceil(n_train / 8)
    assert result.params["epochs"] == math.ceil(10 / steps_per_epoch)
    assert result.metrics["cost/train_samples"] == n_train * result.params["epochs"]


def test_photo_folders_default_to_the_backbone_pretrained_size() -> None:
    # data=imagefolder leaves the resolution to the backbone: 224 px for Lite0 (timm's pretrained_cfg)
    cfg = load_config(["data=imagefolder", "data.root=/tmp"])
    assert cfg.data.resolution is None
    assert resolve_defaults(cfg).data.resolution == 224
    assert resolve_defaults(load_config(["data=digits"])).data.resolution == 32  # explicit stays


def test_an_unresolved_resolution_is_not_used_silently() -> None:
    with pytest.raises(ConfigError, match="unresolved"):
        _ = load_config(["data=imagefolder", "data.root=/tmp"]).data.size
