from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tlbench.data.sources.folder_layout import POOL, scan_layout
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
