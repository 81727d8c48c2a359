"""The network (class maps, the step budget) and prepare(): the memory format a CNN trains in (and that
it does not change the answer), the steps a trial trains, and defaults resolved from the backbone."""

from __future__ import annotations

import math

import pytest
import torch
from timm.data import ImageNetInfo

from tlbench.config import load_config
from tlbench.config.schema import TrainerConfig
from tlbench.errors import ConfigError, ModelError
from tlbench.run import train
from tlbench.training.inputs import batch_transform
from tlbench.training.network import (
    near_labels,
    prepare,
    resolve_class_map,
    resolve_defaults,
    training_budget,
)

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


INFO = ImageNetInfo("imagenet-1k")


@pytest.mark.parametrize(
    ("typed", "first"),
    [
        ("antt", "'ant' (310: ant, emmet, pismire)"),  # a typo finds the one-word synonym it misspells
        ("ants", "'ant' (310: ant, emmet, pismire)"),  # a plural finds the singular label
        ("bees", "'bee' (309: bee)"),
        ("Golden retreiver", "'golden retriever' (207: golden retriever)"),  # case and a swapped pair
        ("pismir", "'pismire' (310: ant, emmet, pismire)"),  # any synonym of a label, not only its first
    ],
)
def test_near_labels_compare_each_synonym(typed: str, first: str) -> None:
    # the nearest label comes first, with its index and every synonym
    assert near_labels(typed, INFO)[0] == first


def test_near_labels_name_each_class_once_and_at_most_n() -> None:
    # 'tabby' and 'tabby cat' are one class (281): listed once; never more than n entries
    labels = near_labels("tabbys", INFO, n=3)
    assert len(labels) <= 3
    assert sum(label.startswith(("'tabby'", "'tabby cat'")) for label in labels) == 1


def test_near_labels_of_nonsense_is_empty() -> None:
    # nothing resembles it: no suggestion rather than three arbitrary ones
    assert near_labels("zzzzqx", INFO) == []


def test_a_misspelt_class_map_entry_suggests_the_near_label() -> None:
    # the user's error from issue 20: ants=[antt] must point at 'ant', not at hatchet/knot/cassette
    import timm

    model = timm.create_model("test_efficientnet")  # an ImageNet-1k classifier (random weights)
    with pytest.raises(
        ModelError, match=r"class_map\[ants\]: no 1000-class label 'antt'\. Close matches: 'ant'"
    ):
        resolve_class_map({"ants": ["antt"], "bees": ["bee"]}, target_classes=["ants", "bees"], model=model)
    # the same map spelt right resolves to ImageNet's ant (310) and bee (309)
    assert resolve_class_map(
        {"ants": ["ant"], "bees": ["bee"]}, target_classes=["ants", "bees"], model=model
    ) == [[310], [309]]


@pytest.mark.parametrize(
    ("n_train", "batch", "min_steps", "epochs"),
    [
        (10, 32, 100, 100),  # 1 step per epoch: 100 epochs
        (200, 32, 100, 15),  # 7 steps per epoch: 15 epochs (105 steps)
        (5000, 32, 100, 3),  # already more steps than asked in the configured 3 epochs
        (50, 16, 1, 3),
    ],
)
def test_min_steps_derives_epochs_per_data_size(
    n_train: int, batch: int, min_steps: int, epochs: int
) -> None:
    # every data size trains at least min_steps optimizer steps; epochs is a floor, not the budget
    trainer = training_budget(TrainerConfig(epochs=3, batch_size=batch, min_steps=min_steps), n_train)
    assert trainer.epochs == epochs
    assert trainer.epochs * math.ceil(n_train / batch) >= min_steps


def test_val_checks_spread_validation_over_the_fit() -> None:
    # 100 epochs and 5 checks: validate every 20 epochs; without val_checks the cadence is left alone
    trainer = training_budget(TrainerConfig(epochs=1, batch_size=32, min_steps=100, val_checks=5), 10)
    assert (trainer.epochs, trainer.val_every_n_epochs) == (100, 20)
    assert training_budget(TrainerConfig(epochs=4), 10).val_every_n_epochs == 1
