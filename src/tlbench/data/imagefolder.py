"""Image folders (``data.root``): find the layout, decode every image once, report every problem in one place.

Layouts: split folders (``root/train/<class>/...`` plus ``root/val/`` (or ``valid/``, ``validation/``)
and/or ``root/test/``), or flat (``root/<class>/...``). Images are found recursively in each class folder
by extension (hidden files and other extensions are ignored). ``train/`` with a validation folder and
``test/`` uses all three; with only one held-out folder, that folder is the TEST set and validation is
carved from ``train/`` (a model selected on its test set would report an optimistic score); ``train/``
alone or a flat layout carves both. Classes are the sorted union of class-folder names; a class without
a usable image is skipped with a warning (fewer than two left: :class:`DataError`), one missing from a
split is named in a warning; unreadable and identical files are each named in one warning. Decoding is
:mod:`tlbench.data.decode` (its own module: it ships with an exported model).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from tlbench.config.schema import DataConfig
from tlbench.data.containers import Source, SourceData, TensorSplit
from tlbench.data.decode import DecodedFile, decode_file
from tlbench.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
)
SPLIT_FOLDER_NAMES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
POOL = "pool"  # the role of the root in a flat layout


@dataclass(frozen=True)
class FolderLayout:
    """What :func:`scan_layout` found."""

    root: Path  # absolute
    folders: dict[str, Path]  # role (train / val / test, or pool when flat) -> its folder
    files: dict[str, dict[str, list[Path]]]  # role -> class folder name -> image files, sorted
    loose_images: list[Path]  # image files outside any class folder (they cannot be labelled)
    ignored_folders: list[Path]  # top-level folders of a split layout that are not a split name

    @property
    def is_flat(self) -> bool:
        return POOL in self.folders

    def signature(self) -> tuple[tuple[str, int, int], ...]:
        """Every image file's path, size and mtime: changes when any file is touched."""
        return file_stamps(
            [path for classes in self.files.values() for ps in classes.values() for path in ps]
        )


def file_stamps(paths: list[Path]) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of existing files: changes whenever one of them is replaced."""
    stamps = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue
        stamps.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(stamps)


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_image(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _image_files(folder: Path) -> list[Path]:
    """Image files below ``folder`` (following links, skipping hidden folders), sorted."""
    found: list[Path] = []
    for current, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            path = Path(current) / name
            if _is_image(path):
                found.append(path)
            else:
                log.debug("ignoring non-image file %s", path)
    return sorted(found)


def scan_layout(root: Path) -> FolderLayout:
    """The layout, class folders and image files under ``root``; a :class:`DataError` if there are none.

    Not torchvision's ``ImageFolder``: it knows the flat layout only, keeps hidden files with an image
    extension and stops at a class folder without images, where this reports and carries on.
    """
    if not root.is_dir():
        raise DataError(
            f"data.root={root} is not an existing folder; point data.root at a folder of class "
            "sub-folders (root/<class>/<image>) or of split folders (root/train/<class>/<image>)"
        )
    top = _visible_dirs(root)
    by_name = {path.name.lower(): path for path in top}
    split_layout = "train" in by_name  # else flat: every sub-folder of the root is a class
    folders: dict[str, Path] = {} if split_layout else {POOL: root}
    for role, names in SPLIT_FOLDER_NAMES.items():
        matches = [by_name[name] for name in names if split_layout and name in by_name]
        if len(matches) > 1:
            listed = ", ".join(f"{p.name}/" for p in matches)
            raise DataError(f"{root} has several {role} folders ({listed}); keep one of them")
        if matches:
            folders[role] = matches[0]
    ignored = [path for path in top if path not in folders.values()] if split_layout else []
    files = {
        role: {cls.name: _image_files(cls) for cls in _visible_dirs(folder)}
        for role, folder in folders.items()
    }
    if not any(files.values()):
        raise DataError(
            f"no class folders in {root}: expected root/<class>/<image> or root/train/<class>/<image> "
            "(with root/val/ and/or root/test/ beside train/)"
        )
    loose = [
        p for folder in folders.values() for p in sorted(folder.iterdir()) if p.is_file() and _is_image(p)
    ]
    return FolderLayout(root=root, folders=folders, files=files, loose_images=loose, ignored_folders=ignored)


_MAX_THREADS = 8  # Pillow releases the GIL while decoding and resampling


@dataclass(frozen=True)
class _Entry:
    role: str
    class_name: str
    path: Path
    decoded: DecodedFile


def _root(cfg: DataConfig) -> Path:
    return Path(str(cfg.root)).expanduser().resolve()  # DataConfig requires data.root for image folders


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _warn_about_files(root: Path, entries: list[_Entry]) -> None:
    """One warning for the unreadable files, one for identical files."""
    bad = [entry for entry in entries if entry.decoded.error is not None]
    if bad:
        listed = "".join(f"\n  {_relative(e.path, root)}: {e.decoded.error}" for e in bad)
        log.warning("skipped %d unreadable image files in %s (fix or delete them):%s", len(bad), root, listed)
    groups: dict[str, list[_Entry]] = defaultdict(list)
    for entry in entries:
        if entry.decoded.pixels is not None:
            groups[entry.decoded.digest].append(entry)
    copies = [group for group in groups.values() if len(group) > 1]
    if not copies:
        return
    lines = []
    for group in copies:
        where = (
            "across splits: leaks into evaluation" if len({e.role for e in group}) > 1 else "within one split"
        )
        labels = "; conflicting classes" if len({e.class_name for e in group}) > 1 else ""
        lines.append(f"\n  {' = '.join(_relative(e.path, root) for e in group)} ({where}{labels})")
    log.warning(
        "identical image files (%d groups) in %s; a copy in val/test of a training image is leakage that "
        "inflates accuracy (copies in one folder can also land in different carved splits), so delete "
        "the extra copies:%s",
        len(copies),
        root,
        "".join(lines),
    )


def _usable_classes(layout: FolderLayout, entries: list[_Entry]) -> tuple[str, ...]:
    """Sorted class names with at least one decodable image; warns about the others."""
    found = sorted({name for classes in layout.files.values() for name in classes})
    usable = {entry.class_name for entry in entries if entry.decoded.pixels is not None}
    files = Counter(entry.class_name for entry in entries)
    skipped = [
        f"{name} ({files[name]} unreadable file{'s' * (files[name] > 1)})"
        if files[name]
        else f"{name} (no image files)"
        for name in found
        if name not in usable
    ]
    if skipped:
        log.warning(
            "skipping class folders without any usable image in %s: %s", layout.root, ", ".join(skipped)
        )
    kept = tuple(name for name in found if name in usable)
    if len(kept) < 2:
        raise DataError(
            f"{layout.root} has {len(kept)} usable class folder(s) ({', '.join(kept) or 'none'}); "
            "a classifier needs at least 2 class folders with images"
        )
    return kept


def _split(
    role: str, entries: list[_Entry], class_names: tuple[str, ...], folder: Path, resolution: int
) -> TensorSplit:
    """The usable images of ``role``; warns about classes it lacks (unless it has no image at all)."""
    index = {name: i for i, name in enumerate(class_names)}
    usable = [e for e in entries if e.role == role and e.decoded.pixels is not None and e.class_name in index]
    if not usable:
        empty = torch.empty(0, 3, resolution, resolution, dtype=torch.uint8)
        return TensorSplit(empty, torch.empty(0, dtype=torch.int64))
    missing = sorted(set(class_names) - {e.class_name for e in usable}, key=class_names.index)
    if missing:
        consequence = (
            "the model cannot learn them" if role in ("train", POOL) else "their accuracy is not measured"
        )
        log.warning(
            "%s/ has no usable images of classes %s; %s", folder.name, ", ".join(missing), consequence
        )
    pixels = np.stack([e.decoded.pixels for e in usable if e.decoded.pixels is not None])
    labels = np.array([index[e.class_name] for e in usable], dtype=np.int64)
    return TensorSplit(torch.from_numpy(pixels), torch.from_numpy(labels))


def _assign_roles(splits: dict[str, TensorSplit], layout: FolderLayout) -> dict[str, tuple[TensorSplit, str]]:
    """Source split name -> (tensors, origin), applying the module's split rules."""
    train_role = POOL if layout.is_flat else "train"
    train = splits[train_role]
    if not len(train):
        raise DataError(f"{layout.folders[train_role]} has no usable images: the train pool would be empty")
    assigned = {"train": (train, "class folders" if layout.is_flat else "train/")}
    held_out = {role: splits[role] for role in ("val", "test") if role in splits and len(splits[role])}
    for role in ("val", "test"):
        if role in splits and role not in held_out:
            log.warning("%s/ has no usable images; treating it as absent", layout.folders[role].name)
    if len(held_out) == 2:
        return {**assigned, **{role: (held_out[role], f"{layout.folders[role].name}/") for role in held_out}}
    if held_out:
        ((role, split),) = held_out.items()
        note = "" if role == "test" else ", the only held-out folder, used as test"
        return {**assigned, "test": (split, f"{layout.folders[role].name}/{note}")}
    return assigned


def load_imagefolder_source(cfg: DataConfig) -> SourceData:
    """Decode ``data.root`` at ``data.resolution`` following the module's split rules."""
    layout = scan_layout(_root(cfg))
    root, loose = layout.root, layout.loose_images
    if loose:
        listed = ", ".join(_relative(p, root) for p in loose)
        log.warning("ignoring %d image files outside class folders in %s: %s", len(loose), root, listed)
    if layout.ignored_folders:
        listed = ", ".join(f"{p.name}/" for p in layout.ignored_folders)
        log.warning("ignoring folders in %s that are not train/val/test splits: %s", root, listed)
    started = time.perf_counter()
    jobs = [
        (role, name, path)
        for role, classes in layout.files.items()
        for name, ps in classes.items()
        for path in ps
    ]
    with ThreadPoolExecutor(max_workers=max(1, min(_MAX_THREADS, os.cpu_count() or 1, len(jobs)))) as pool:
        decoded = pool.map(partial(decode_file, resolution=cfg.size), [path for _, _, path in jobs])
        entries = [_Entry(*job, result) for job, result in zip(jobs, decoded, strict=True)]
    log.info(
        "decoded %d files of %s at %dpx in %.1f s",
        len(entries),
        layout.root,
        cfg.size,
        time.perf_counter() - started,
    )
    _warn_about_files(root, entries)
    class_names = _usable_classes(layout, entries)
    splits = {
        role: _split(role, entries, class_names, folder, cfg.size) for role, folder in layout.folders.items()
    }
    assigned = _assign_roles(splits, layout)
    return SourceData(
        train=assigned["train"][0],
        val=assigned["val"][0] if "val" in assigned else None,
        test=assigned["test"][0] if "test" in assigned else None,
        class_names=class_names,
        location=str(layout.root),
        origins={role: origin for role, (_, origin) in assigned.items()},
    )


def _cache_key(cfg: DataConfig) -> Hashable:
    layout = scan_layout(_root(cfg))
    return (cfg.size, str(layout.root), layout.signature())


SOURCE = Source(load=load_imagefolder_source, cache_key=_cache_key)
