"""Find the splits, classes and image files of an image-folder dataset, without decoding anything.

Two layouts are recognised:

* split folders: ``root/train/<class>/...`` plus ``root/val/`` (also ``valid/``, ``validation/``)
  and/or ``root/test/``, each holding class folders;
* flat: ``root/<class>/...`` — every sub-folder of the root is a class.

Image files are found recursively inside each class folder and chosen by extension; hidden files
and other extensions (``.txt``, ``.DS_Store``, ...) are ignored.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from tlbench.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
)
SPLIT_FOLDER_NAMES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
POOL = "pool"  # the role of the root in a flat layout


@dataclass(frozen=True)
class FolderLayout:
    """What :func:`scan_layout` found.

    Attributes:
        root: The dataset folder (absolute).
        folders: Role (``train``/``val``/``test``, or ``pool`` when flat) -> its folder.
        files: Role -> class folder name -> image files, sorted by path.
        loose_images: Image files not inside any class folder (they cannot be labelled).
        ignored_folders: Top-level folders of a split layout that are not a known split name.
    """

    root: Path
    folders: dict[str, Path]
    files: dict[str, dict[str, list[Path]]]
    loose_images: list[Path]
    ignored_folders: list[Path]

    @property
    def is_flat(self) -> bool:
        return POOL in self.folders

    def signature(self) -> str:
        """Hash of every image file's path, size and mtime: changes when any file is touched."""
        digest = hashlib.sha256(str(self.root).encode())
        for role, classes in sorted(self.files.items()):
            for name, paths in sorted(classes.items()):
                digest.update(f"{role}/{name}".encode())
                for path in paths:
                    stat = path.stat()
                    digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()


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


def _loose_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and _is_image(p))


def _split_folders(root: Path, top: list[Path]) -> dict[str, Path]:
    """Role -> folder for a split layout; rejects two folders claiming the same role."""
    by_name = {path.name.lower(): path for path in top}
    folders: dict[str, Path] = {}
    for role, names in SPLIT_FOLDER_NAMES.items():
        matches = [by_name[name] for name in names if name in by_name]
        if len(matches) > 1:
            listed = ", ".join(f"{p.name}/" for p in matches)
            raise DataError(f"{root} has several {role} folders ({listed}); keep one of them")
        if matches:
            folders[role] = matches[0]
    return folders


def scan_layout(root: Path) -> FolderLayout:
    """Find the layout, class folders and image files under ``root``.

    Raises:
        DataError: ``root`` is missing, not a folder, or has no class folders.
    """
    if not root.is_dir():
        raise DataError(
            f"data.root={root} is not an existing folder; point data.root at a folder of class "
            "sub-folders (root/<class>/<image>) or of split folders (root/train/<class>/<image>)"
        )
    top = _visible_dirs(root)
    if any(path.name.lower() == "train" for path in top):
        folders = _split_folders(root, top)
        ignored = [path for path in top if path not in folders.values()]
    else:
        folders, ignored = {POOL: root}, []
    files = {
        role: {cls.name: _image_files(cls) for cls in _visible_dirs(folder)}
        for role, folder in folders.items()
    }
    if not any(files.values()):
        raise DataError(
            f"no class folders in {root}: expected root/<class>/<image> or root/train/<class>/<image> "
            "(with root/val/ and/or root/test/ beside train/)"
        )
    loose = [path for folder in folders.values() for path in _loose_images(folder)]
    return FolderLayout(root=root, folders=folders, files=files, loose_images=loose, ignored_folders=ignored)
