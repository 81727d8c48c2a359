from __future__ import annotations

import pytest
from timm.data import ImageNetInfo

from tlbench.errors import ModelError
from tlbench.models.network import near_labels, resolve_class_map

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
