from __future__ import annotations

import math

import pytest
from timm.data import ImageNetInfo

from tlbench.config.schema import TrainerConfig
from tlbench.errors import ModelError
from tlbench.models.network import near_labels, resolve_class_map, training_budget

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
