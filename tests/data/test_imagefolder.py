from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tlbench.config.schema import DataConfig, DatasetName
from tlbench.data.sources import (
    POOL,
    SourceData,
    load_imagefolder_source,
    scan_layout,
)
from tlbench.errors import DataError

TreeMaker = Callable[[Path, dict[str, dict[str, int]]], Path]


@pytest.mark.parametrize(
    ("splits", "roles"),
    [
        (("train", "val", "test"), {"train", "val", "test"}),  # all three split folders
        (("train", "valid"), {"train", "val"}),  # valid/ is a validation alias
        (("train", "validation", "test"), {"train", "val", "test"}),  # so is validation/
        (("Train", "TEST"), {"train", "test"}),  # names are matched case-insensitively
        (("train",), {"train"}),  # train alone is still a split layout
        (("",), {POOL}),  # class folders at the root: flat
    ],
)
def test_detects_layout(
    tmp_path: Path, class_tree: TreeMaker, splits: tuple[str, ...], roles: set[str]
) -> None:
    class_tree(tmp_path, {split: {"a": 1, "b": 1} for split in splits})
    layout = scan_layout(tmp_path)
    # each split folder is found under its role; flat trees have a single pool
    assert set(layout.folders) == roles and layout.is_flat == (roles == {POOL})


def test_lists_images_recursively_and_ignores_other_files(tmp_path: Path, class_tree: TreeMaker) -> None:
    class_tree(tmp_path, {"": {"a": 2, "b": 1}})
    (tmp_path / "a" / "nested").mkdir()
    (tmp_path / "a" / "nested" / "deep.JPG").write_bytes(b"x")
    for name in ("notes.txt", ".DS_Store", "._1.png"):
        (tmp_path / "a" / name).write_bytes(b"x")
    (tmp_path / ".hidden_class").mkdir()
    files = scan_layout(tmp_path).files[POOL]
    # images in sub-folders count (any case of extension); text, hidden files and folders do not
    assert sorted(files) == ["a", "b"]
    assert [p.name for p in files["a"]] == ["1.png", "2.png", "deep.JPG"]


def test_reports_loose_images_and_unknown_folders(tmp_path: Path, class_tree: TreeMaker) -> None:
    class_tree(tmp_path, {"train": {"a": 1}, "extra": {"a": 1}})
    (tmp_path / "train" / "stray.png").write_bytes(b"x")
    layout = scan_layout(tmp_path)
    # images outside class folders and non-split folders are recorded for a warning
    assert [p.name for p in layout.loose_images] == ["stray.png"]
    assert [p.name for p in layout.ignored_folders] == ["extra"]


@pytest.mark.parametrize(
    ("tree", "pattern"),
    [
        (None, "not an existing folder"),  # root missing
        ({}, "no class folders"),  # root without sub-folders
        ({"train": {"a": 1}, "val": {"a": 1}, "valid": {"a": 1}}, "several val"),  # two validation folders
    ],
)
def test_rejects_unusable_roots(
    tmp_path: Path, class_tree: TreeMaker, tree: dict[str, dict[str, int]] | None, pattern: str
) -> None:
    root = tmp_path / "data"
    if tree is not None:
        root.mkdir()
        class_tree(root, tree)
    # each problem is explained with the path
    with pytest.raises(DataError, match=pattern):
        scan_layout(root)


def test_signature_changes_when_a_file_changes(tmp_path: Path, class_tree: TreeMaker) -> None:
    class_tree(tmp_path, {"": {"a": 2, "b": 1}})
    before = scan_layout(tmp_path).signature()
    target = tmp_path / "a" / "1.png"
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    # a touched file invalidates a cached decode; an untouched tree keeps its signature
    assert scan_layout(tmp_path).signature() != before
    assert scan_layout(tmp_path).signature() == scan_layout(tmp_path).signature()


# train/cats files that decode, in path order, with the colour their centre must have
READABLE_CATS = {
    "cmyk.jpg": (0, 128, 255),
    "deep.png": (128, 128, 128),  # 16-bit 32768 scaled, not clipped to 255
    "dup.png": (9, 9, 9),
    "gray.png": (100, 100, 100),
    "palette.gif": (0, 200, 0),
    "really_png.jpg": (1, 2, 3),  # content decides, not the extension
    "rgb.jpg": (200, 30, 40),
    "rgba.png": (255, 255, 255),  # fully transparent over white
}


def load(root: Path) -> SourceData:
    return load_imagefolder_source(DataConfig(name=DatasetName.imagefolder, root=str(root), resolution=8))


def warnings_of(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_odd_tree_loads_the_readable_images(odd_tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = load(odd_tree)
    # empty_class is skipped; the single-image class is kept; only test/ is held out, so val is carved later
    assert data.class_names == ("cats", "dogs", "lonely")
    assert data.train.labels.tolist() == [0] * 8 + [1] * 4 + [2]
    assert data.val is None and data.test is not None and data.test.labels.tolist() == [0, 0, 1]
    assert data.train.images.shape == (13, 3, 8, 8)


@pytest.mark.parametrize(("index", "name"), list(enumerate(READABLE_CATS)))
def test_odd_tree_decodes_every_mode(odd_tree: Path, index: int, name: str) -> None:
    centre = load(odd_tree).train.images[index, :, 4, 4].tolist()
    # each mode arrives as the RGB colour it shows (JPEGs within codec error)
    assert max(abs(a - b) for a, b in zip(centre, READABLE_CATS[name], strict=True)) <= 3, name


def test_odd_tree_warnings_name_the_files(odd_tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    load(odd_tree)
    text = warnings_of(caplog)
    unreadable = next(r.getMessage() for r in caplog.records if "unreadable" in r.getMessage())
    # one warning names every unreadable file with its reason, and no ignored non-image file
    assert all(name in unreadable for name in ("empty.jpg: empty file", "truncated.jpg", "text.png"))
    assert "notes.txt" not in text and ".DS_Store" not in text
    # the duplicate across train/ and test/ is called leakage and both copies are named
    assert "leak" in text and "train/cats/dup.png = test/cats/dup_copy.png" in text
    # the empty class folder is named; so is the class test/ lacks
    assert "without any usable image" in text and "empty_class (no image files)" in text
    assert "test/ has no usable images of classes lonely" in text


@pytest.mark.parametrize(
    ("tree", "sizes", "test_origin"),
    [
        # train + val + test: all three as they are
        ({"train": {"a": 4, "b": 4}, "val": {"a": 2, "b": 2}, "test": {"a": 1, "b": 3}}, (8, 4, 4), "test/"),
        # train + val only: val/ becomes the test set, validation is carved later
        ({"train": {"a": 4, "b": 4}, "val": {"a": 2, "b": 2}}, (8, None, 4), "val/, the only held-out"),
        # train + validation alias only: same rule
        ({"train": {"a": 4, "b": 4}, "validation": {"a": 1, "b": 1}}, (8, None, 2), "validation/, the only"),
        # train + test only: test/ is the test set
        ({"train": {"a": 4, "b": 4}, "test": {"a": 1, "b": 2}}, (8, None, 3), "test/"),
        # train alone: both carved later
        ({"train": {"a": 4, "b": 4}}, (8, None, None), None),
        # flat class folders: both carved later
        ({"": {"a": 5, "b": 6}}, (11, None, None), None),
    ],
)
def test_split_rules(
    tmp_path: Path,
    class_tree: TreeMaker,
    tree: dict[str, dict[str, int]],
    sizes: tuple[int | None, ...],
    test_origin: str | None,
) -> None:
    data = load(class_tree(tmp_path, tree))
    lengths = tuple(None if split is None else len(split) for split in (data.train, data.val, data.test))
    # the documented rule decides which folder plays which part
    assert lengths == sizes
    assert (data.origins.get("test") or "").startswith(test_origin or "")


def test_unreadable_held_out_folder_is_treated_as_absent(
    tmp_path: Path, class_tree: TreeMaker, caplog: pytest.LogCaptureFixture
) -> None:
    class_tree(tmp_path, {"train": {"a": 3, "b": 3}})
    (tmp_path / "test" / "a").mkdir(parents=True)
    (tmp_path / "test" / "a" / "x.png").write_bytes(b"")
    data = load(tmp_path)
    # a test/ folder with nothing decodable is ignored, and the user is told
    assert data.test is None and "test/ has no usable images; treating it as absent" in warnings_of(caplog)


@pytest.mark.parametrize(
    "tree",
    [
        {"": {"only": 3, "empty": 0}},  # one class with images, one empty: not a classification task
        {"train": {"a": 0, "b": 0}, "test": {"a": 0}},  # nothing at all
    ],
)
def test_fewer_than_two_usable_classes_is_an_error(tmp_path: Path, class_tree: TreeMaker, tree: dict) -> None:
    with pytest.raises(DataError, match="at least 2 class folders"):
        load(class_tree(tmp_path, tree))


def test_class_of_unreadable_files_is_skipped_by_name(
    tmp_path: Path, class_tree: TreeMaker, caplog: pytest.LogCaptureFixture
) -> None:
    class_tree(tmp_path, {"": {"a": 2, "b": 2}})
    (tmp_path / "broken").mkdir()
    for name in ("x.png", "y.jpg"):
        (tmp_path / "broken" / name).write_bytes(b"")
    data = load(tmp_path)
    # the class whose files all fail is dropped, and the warning says why
    assert data.class_names == ("a", "b") and "broken (2 unreadable files)" in warnings_of(caplog)


def test_train_without_usable_images_is_an_error(tmp_path: Path, class_tree: TreeMaker) -> None:
    class_tree(tmp_path, {"train": {"a": 0}, "test": {"a": 2, "b": 2}})
    # classes exist only in test/: there is nothing to train on
    with pytest.raises(DataError, match="train pool would be empty"):
        load(tmp_path)


def test_missing_root_is_a_data_error_naming_the_key(tmp_path: Path) -> None:
    # (the commands check it before torch loads: tests/test_cli.py)
    with pytest.raises(DataError, match=r"data\.root=.*nope is not an existing folder"):
        load(tmp_path / "nope")
