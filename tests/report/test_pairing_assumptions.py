"""The claim paired comparisons rest on: a final run's training subset depends on the data config and the
run's seed only (never the strategy), and its test set on ``split_seed`` only."""

from __future__ import annotations

import inspect

import torch

from tlbench.config.schema import DataConfig, DatasetName
from tlbench.data import load_splits
from tlbench.training import prepare


def _cfg(**overrides: object) -> DataConfig:
    values: dict = {"name": DatasetName.synthetic, "resolution": 8, "num_classes": 3, "samples_per_class": 40}
    return DataConfig(**{**values, "n_per_class": 5, **overrides})


def test_the_subset_is_a_function_of_data_config_and_seed() -> None:
    # nothing but the data config and the seed reaches the subset: no strategy, model or optimiser
    assert list(inspect.signature(load_splits).parameters) == ["cfg", "seed"]
    # and the trial passes the run's own seed (the final seed) to it
    assert "load_splits(cfg.data, seed=cfg.seed)" in inspect.getsource(prepare)


def test_same_seed_same_subset_and_every_seed_the_same_test_set() -> None:
    one, again, other = load_splits(_cfg(), seed=1), load_splits(_cfg(), seed=1), load_splits(_cfg(), seed=2)
    # same seed: the same training images (the fingerprint hashes their indices) ...
    assert one.fingerprint == again.fingerprint and torch.equal(one.train.images, again.train.images)
    # ... another seed: other training images, the very same test images in the same order
    assert one.fingerprint != other.fingerprint
    assert torch.equal(one.test.images, other.test.images) and torch.equal(one.test.labels, other.test.labels)
