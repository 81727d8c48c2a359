from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from tlbench.config.schema import DataConfig, DatasetName
from tlbench.data import DataSplits, clear_source_cache, load_splits, sources
from tlbench.data.load import FINGERPRINT_LENGTH, splits_fingerprint, tensor_digest
from tlbench.data.sources import Source, SourceData
from tlbench.errors import DataError

TreeMaker = Callable[[Path, dict[str, dict[str, int]]], Path]
HYMENOPTERA = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "hymenoptera"


def synthetic_cfg(**overrides: object) -> DataConfig:
    values: dict = {"name": DatasetName.synthetic, "resolution": 8, "num_classes": 3, "samples_per_class": 40}
    return DataConfig(**{**values, **overrides})


def rows(split: torch.Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in split}


@pytest.mark.parametrize("name", [DatasetName.synthetic, DatasetName.digits])
@pytest.mark.parametrize(("n_per_class", "seed"), [(None, 0), (3, 0), (3, 1), (10, 5)])
def test_val_and_test_ignore_seed_and_size(name: DatasetName, n_per_class: int | None, seed: int) -> None:
    reference = load_splits(synthetic_cfg(name=name), seed=0)
    splits = load_splits(synthetic_cfg(name=name, n_per_class=n_per_class), seed=seed)
    # evaluation sets depend on split_seed only, never on the run's seed or n_per_class
    assert torch.equal(splits.val.images, reference.val.images) and torch.equal(
        splits.test.labels, reference.test.labels
    )


@pytest.mark.parametrize("n_per_class", [1, 4, 19])
def test_train_subset_counts(n_per_class: int) -> None:
    splits = load_splits(synthetic_cfg(n_per_class=n_per_class), seed=0)
    # exactly n per class from a pool of 40 - round(8) - round(10) = 22 per class
    assert torch.bincount(splits.train.labels).tolist() == [n_per_class] * 3 and splits.pool_size == 66


def test_train_subsets_are_nested_and_disjoint_from_evaluation() -> None:
    small, large = (load_splits(synthetic_cfg(n_per_class=n), seed=2) for n in (3, 9))
    # the same seed grows the training set without redrawing it, and never takes val/test images
    assert rows(small.train.images) <= rows(large.train.images)
    assert not rows(large.train.images) & (rows(large.val.images) | rows(large.test.images))


def test_split_seed_changes_evaluation_sets() -> None:
    # another split_seed is another dataset draw (synthetic) and another val set
    assert not torch.equal(
        load_splits(synthetic_cfg(split_seed=1), seed=0).val.images,
        load_splits(synthetic_cfg(), seed=0).val.images,
    )


@pytest.mark.parametrize(
    ("overrides", "seed", "same"),
    [
        ({}, 0, True),  # identical request, identical key
        ({"n_per_class": None}, 7, True),  # the whole pool: the seed selects nothing
        ({"n_per_class": 5}, 1, False),  # another subset
        ({"n_per_class": 6}, 0, False),  # another size
        ({"resolution": 16}, 0, False),  # other pixels
        ({"max_val_per_class": 2}, 0, False),  # other evaluation protocol
    ],
)
def test_fingerprint(overrides: dict, seed: int, same: bool) -> None:
    base = load_splits(synthetic_cfg(n_per_class=5 if "n_per_class" not in overrides else None), seed=0)
    other = load_splits(synthetic_cfg(**{"n_per_class": 5, **overrides}), seed=seed)
    # the key changes exactly when the data a feature cache would hold changes
    assert (other.fingerprint == base.fingerprint) is same


@pytest.mark.parametrize(("cap_val", "cap_test"), [(2, None), (None, 1), (3, 3)])
def test_evaluation_caps(cap_val: int | None, cap_test: int | None) -> None:
    splits = load_splits(synthetic_cfg(max_val_per_class=cap_val, max_test_per_class=cap_test), seed=0)
    # caps bound each class of val/test (8 and 10 per class uncapped); the train pool is unaffected
    assert torch.bincount(splits.val.labels).tolist() == [cap_val or 8] * 3
    assert torch.bincount(splits.test.labels).tolist() == [cap_test or 10] * 3
    assert splits.pool_size == 66


def test_too_large_n_per_class_names_class_and_limit() -> None:
    # 22 per class in the pool: the message says which class and what would work
    with pytest.raises(DataError, match=r"'pattern_0' \(22 images\).*n_per_class <= 22"):
        load_splits(synthetic_cfg(n_per_class=23), seed=0)


def test_description_and_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tlbench.data"):
        splits = load_splits(synthetic_cfg(n_per_class=2), seed=3)
    # one line naming the dataset, sizes and where each split came from, also logged
    assert "\n" not in splits.description and splits.description in caplog.text
    for part in ("synthetic", "train 6 of a 66-image pool", "seed 3", "val 24 (carved", "test 30 (carved"):
        assert part in splits.description


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Resolutions at which the synthetic source is actually decoded (cache misses)."""
    resolutions: list[int] = []

    def counting_load(cfg: DataConfig) -> SourceData:
        resolutions.append(cfg.resolution)
        return sources.load_synthetic_source(cfg)

    counting = Source(load=counting_load, cache_key=sources.SOURCES[DatasetName.synthetic].cache_key)
    monkeypatch.setattr(sources, "SOURCES", {**sources.SOURCES, DatasetName.synthetic: counting})
    return resolutions


def test_source_cache_decodes_once(decodes: list[int]) -> None:
    for seed, n_per_class in ((0, 2), (1, 5), (2, None)):
        load_splits(synthetic_cfg(n_per_class=n_per_class), seed=seed)
    load_splits(synthetic_cfg(resolution=16), seed=0)
    # trials of a sweep (other seeds and sizes) reuse one decode; another resolution decodes anew
    assert decodes == [8, 16]


def test_clear_source_cache_forces_a_new_decode(decodes: list[int]) -> None:
    load_splits(synthetic_cfg(), seed=0)
    clear_source_cache()
    load_splits(synthetic_cfg(), seed=0)
    # after clearing, the dataset is decoded again
    assert decodes == [8, 8]


def test_imagefolder_cache_notices_changed_files(tmp_path: Path, class_tree: TreeMaker) -> None:
    class_tree(tmp_path, {"": {"a": 5, "b": 5}})
    cfg = DataConfig(name=DatasetName.imagefolder, root=str(tmp_path), resolution=8)
    first = load_splits(cfg, seed=0)
    target = tmp_path / "a" / "1.png"
    target.write_bytes((tmp_path / "b" / "9.png").read_bytes())
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    # a replaced file is decoded again, so the content key changes
    assert load_splits(cfg, seed=0).fingerprint != first.fingerprint


def test_imagefolder_splits_sizes(tmp_path: Path, class_tree: TreeMaker) -> None:
    class_tree(tmp_path, {"train": {"a": 10, "b": 10}, "val": {"a": 3, "b": 4}})
    splits = load_splits(DataConfig(name=DatasetName.imagefolder, root=str(tmp_path), resolution=8), seed=0)
    # val/ is the test set; validation carved from train/ (round(0.2 * 10) = 2 per class)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (16, 4, 7)
    assert "val/, the only held-out folder, used as test" in splits.description


def test_small_classes_are_reported_for_carved_splits(
    tmp_path: Path, class_tree: TreeMaker, caplog: pytest.LogCaptureFixture
) -> None:
    class_tree(tmp_path, {"": {"big": 12, "single": 1}})
    splits = load_splits(DataConfig(name=DatasetName.imagefolder, root=str(tmp_path), resolution=8), seed=0)
    # a one-image class trains but cannot appear in val or test (12 - 2 - 3 = 7 big ones train);
    # the warning says so by name
    assert torch.bincount(splits.train.labels).tolist() == [7, 1]
    assert "carved val split" in caplog.text and "single (1 in the pool)" in caplog.text


def test_empty_evaluation_split_is_an_error(tmp_path: Path, class_tree: TreeMaker) -> None:
    class_tree(tmp_path, {"": {"a": 1, "b": 1}})
    # one image per class leaves nothing to validate on: stop with advice instead of training blind
    with pytest.raises(DataError, match="val split of imagefolder is empty"):
        load_splits(DataConfig(name=DatasetName.imagefolder, root=str(tmp_path), resolution=8), seed=0)


@pytest.mark.shared_data
def test_hymenoptera_from_shared_datasets() -> None:
    if not HYMENOPTERA.is_dir():
        pytest.skip(f"{HYMENOPTERA} is absent (only development machines have ../shared)")
    cfg = DataConfig(name=DatasetName.imagefolder, root=str(HYMENOPTERA), resolution=64, n_per_class=50)
    splits: DataSplits = load_splits(cfg, seed=0)
    # ants/bees; val/ (70 + 83) is the test set; validation is 20% of train/ (124 + 121 files)
    assert splits.class_names == ("ants", "bees") and len(splits.test) == 153
    assert (len(splits.val), splits.pool_size, len(splits.train)) == (49, 196, 100)
    assert splits.train.images.shape[1:] == (3, 64, 64)


DATASET = {"name": "digits", "content": "abc", "resolution": 32}
PARAMS = {"split_seed": 0, "val_fraction": 0.2}


def test_fingerprint_is_short_hex_and_stable() -> None:
    first = splits_fingerprint(dataset=DATASET, train_indices=np.arange(5), split_params=PARAMS)
    # a short hex key that does not change between calls
    assert len(first) == FINGERPRINT_LENGTH and int(first, 16) >= 0
    assert first == splits_fingerprint(
        dataset=dict(DATASET), train_indices=np.arange(5), split_params=dict(PARAMS)
    )


@pytest.mark.parametrize(
    ("dataset", "indices", "params"),
    [
        ({**DATASET, "resolution": 64}, np.arange(5), PARAMS),  # another resolution
        ({**DATASET, "content": "abd"}, np.arange(5), PARAMS),  # other pixels
        (DATASET, np.array([0, 1, 2, 3, 6]), PARAMS),  # another training subset
        (DATASET, np.arange(5), {**PARAMS, "split_seed": 1}),  # other val/test
    ],
)
def test_fingerprint_changes_with_each_ingredient(dataset: dict, indices: np.ndarray, params: dict) -> None:
    base = splits_fingerprint(dataset=DATASET, train_indices=np.arange(5), split_params=PARAMS)
    # any change to what the features would be computed from changes the key
    assert splits_fingerprint(dataset=dataset, train_indices=indices, split_params=params) != base


def test_tensor_digest_sees_content_shape_and_dtype() -> None:
    images = torch.zeros(2, 1, 3, 3, dtype=torch.uint8)
    changed = images.clone()
    changed[1, 0, 2, 2] = 1
    # one changed pixel, another shape or dtype: another digest; equal content: equal digest
    assert tensor_digest(images) == tensor_digest(images.clone())
    assert len({tensor_digest(images), tensor_digest(changed), tensor_digest(images.view(2, 3, 3))}) == 3
    assert tensor_digest(torch.zeros(4, dtype=torch.int64)) != tensor_digest(
        torch.zeros(4, dtype=torch.int32)
    )
