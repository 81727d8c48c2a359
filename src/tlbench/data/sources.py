"""Every dataset source (digits, Fashion-MNIST, CIFAR-10, synthetic, image folders), what a source hands
over, and the registry of all sources, looked up by :class:`~tlbench.config.schema.DatasetName`.

Image folders (``data.root``): find the layout, decode every image once, report every problem in one
place. Layouts: split folders (``root/train/<class>/...`` plus ``root/val/`` (or ``valid/``,
``validation/``) and/or ``root/test/``), or flat (``root/<class>/...``). Images are found recursively in
each class folder by extension (hidden files and other extensions are ignored). ``train/`` with a
validation folder and ``test/`` uses all three; with only one held-out folder, that folder is the TEST
set and validation is carved from ``train/`` (a model selected on its test set would report an optimistic
score); ``train/`` alone or a flat layout carves both. Classes are the sorted union of class-folder
names; a class without a usable image is skipped with a warning (fewer than two left:
:class:`DataError`), one missing from a split is named in a warning; unreadable and identical files are
each named in one warning. Decoding is :mod:`tlbench.data.decode` (its own module: it ships with an
exported model).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F

from tlbench.config.schema import DataConfig, DatasetName
from tlbench.data.decode import DecodedFile, decode_file
from tlbench.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)  # tensors have no single truth value: compare by identity
class TensorSplit:
    """Images (uint8 ``[N, C in (1, 3), H, W]``: a whole dataset fits on the device; normalisation happens
    per batch) and labels (int64 ``[N]``, indices into the class names) of one split."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"images must be uint8 [N, C in (1, 3), H, W]; got {images.dtype} {tuple(images.shape)}"
            )
        if labels.dtype != torch.int64 or labels.dim() != 1:
            raise ValueError(f"labels must be int64 [N]; got {labels.dtype} {tuple(labels.shape)}")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, indices: torch.Tensor) -> TensorSplit:
        """The samples at ``indices``, in that order (a copy, so the source pool stays untouched)."""
        return TensorSplit(self.images[indices], self.labels[indices])


@dataclass(frozen=True)
class SourceData:
    """Decoded pools of one dataset at the target resolution; ``val`` / ``test`` are None when the source
    has no such split, and are then carved from ``train`` with ``split_seed``."""

    train: TensorSplit
    val: TensorSplit | None
    test: TensorSplit | None
    class_names: tuple[str, ...]
    location: str  # where the data was read from (a path, or the package that generated it)
    origins: Mapping[str, str] = field(default_factory=dict)  # split -> where its samples came from


@dataclass(frozen=True)
class Source:
    """How to load a dataset, and a cheap key of everything the load depends on (paths, file times,
    resolution), so a sweep in one process decodes each dataset once."""

    load: Callable[[DataConfig], SourceData]
    cache_key: Callable[[DataConfig], Hashable]


def resolved_root(cfg: DataConfig) -> Path | None:
    """``data.root`` made absolute (relative paths are relative to the working directory)."""
    return Path(cfg.root).expanduser().resolve() if cfg.root else None


def default_cache_dir(name: str) -> Path:
    """Where downloads go when ``data.root`` is not set."""
    return Path.home() / ".cache" / "tlbench" / name


# ---- array sources (digits, Fashion-MNIST, CIFAR-10) come square: brought to the resolution here

_CHUNK = 2048  # images per interpolation call: bounds the float32 working memory
# Not torchvision's resize: its uint8 kernel differs by one level in ~18% of pixels (measured), which
# would change every dataset fingerprint, feature cache and result.


def resize_square(images: torch.Tensor, *, resolution: int) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` with the shorter side resized to ``resolution`` (antialiased bilinear) and
    the centre square cropped: the image folders' rule (array datasets are square already); ``images``
    itself when nothing changes."""
    height, width = int(images.shape[-2]), int(images.shape[-1])
    if height == width == resolution:
        return images
    scale = resolution / min(height, width)
    size = (max(resolution, round(height * scale)), max(resolution, round(width * scale)))
    top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    out = torch.empty((images.shape[0], images.shape[1], resolution, resolution), dtype=torch.uint8)
    for start in range(0, images.shape[0], _CHUNK):
        chunk = images[start : start + _CHUNK].float()
        resized = F.interpolate(chunk, size=size, mode="bilinear", antialias=True, align_corners=False)
        cropped = resized[..., top : top + resolution, left : left + resolution]
        out[start : start + _CHUNK] = cropped.round_().clamp_(0, 255).to(torch.uint8)
    return out


# ---- digits: scikit-learn's 8x8 handwritten digits, tiny, embedded in the package, always available

_MAX_VALUE = 16  # load_digits stores 4-bit intensities 0..16


def load_digits_source(cfg: DataConfig) -> SourceData:
    """1,797 grey 8x8 digits, scaled from 0..16 to 0..255 and resized; no splits of their own."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.rint(bunch.images * (255.0 / _MAX_VALUE)).clip(0, 255).astype(np.uint8)
    images = torch.from_numpy(pixels).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    return SourceData(
        train=TensorSplit(resize_square(images, resolution=cfg.size), labels),
        val=None,
        test=None,
        class_names=tuple(str(name) for name in bunch.target_names),
        location="sklearn.datasets.load_digits",
    )


# ---- synthetic: generated class-dependent patterns, instant, no I/O, for tests and smoke runs.
# Each class is a sinusoidal grating with its own orientation, frequency and colouring, on a
# class-tinted background; every sample gets a random phase (so position is no cue) and pixel noise.
# A small CNN separates the classes well above chance within a few epochs.

_GRATING_AMPLITUDE = 60.0
_TINT_AMPLITUDE = 20.0
_NOISE_STD = 30.0


def generate_patterns(
    *, num_classes: int, samples_per_class: int, resolution: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``[N, 3, R, R]`` images and int64 labels, class-major, fully determined by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    classes = torch.arange(num_classes)
    angles = math.pi * classes / num_classes
    frequencies = 2.0 + (classes % 3).float()
    colours = torch.rand(num_classes, 3, generator=generator) * 2 - 1
    tints = 128.0 + _TINT_AMPLITUDE * (torch.rand(num_classes, 3, generator=generator) * 2 - 1)

    labels = classes.repeat_interleave(samples_per_class)
    count = labels.numel()
    axis = torch.arange(resolution, dtype=torch.float32) / resolution
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    direction = torch.cos(angles)[labels, None, None] * x + torch.sin(angles)[labels, None, None] * y
    phase = torch.rand(count, 1, 1, generator=generator) * 2 * math.pi
    wave = torch.sin(2 * math.pi * frequencies[labels, None, None] * direction + phase)
    images = (
        tints[labels, :, None, None] + _GRATING_AMPLITUDE * colours[labels, :, None, None] * wave[:, None]
    )
    images += _NOISE_STD * torch.randn(images.shape, generator=generator)
    return images.round_().clamp_(0, 255).to(torch.uint8), labels


def load_synthetic_source(cfg: DataConfig) -> SourceData:
    """``num_classes`` x ``samples_per_class`` patterns seeded by ``split_seed``; no own splits."""
    images, labels = generate_patterns(
        num_classes=cfg.num_classes,
        samples_per_class=cfg.samples_per_class,
        resolution=cfg.size,
        seed=cfg.split_seed,
    )
    return SourceData(
        train=TensorSplit(images, labels),
        val=None,
        test=None,
        class_names=tuple(f"pattern_{index}" for index in range(cfg.num_classes)),
        location=f"generated (split_seed={cfg.split_seed})",
    )


# ---- CIFAR-10 through torchvision's reader (python pickle batches in cifar-10-batches-py)

BATCH_FOLDER = "cifar-10-batches-py"


def _cifar10_folder(cfg: DataConfig) -> Path:
    return (resolved_root(cfg) or default_cache_dir("cifar10")) / BATCH_FOLDER


def load_cifar10_source(cfg: DataConfig) -> SourceData:
    """50,000 train and 10,000 test colour images; validation is carved from train."""
    from torchvision.datasets import CIFAR10

    folder = _cifar10_folder(cfg)
    splits, classes = [], []
    for train in (True, False):
        try:
            dataset = CIFAR10(str(folder.parent), train=train, download=cfg.download and train)
        except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
            raise DataError(
                f"CIFAR-10 not found in {folder} ({error}); set data.root to the folder that contains "
                f"{BATCH_FOLDER}/, or set data.download=true to fetch it (about 170 MB)"
            ) from error
        except OSError as error:
            raise DataError(
                f"reading or downloading CIFAR-10 into {folder.parent} failed ({error}); check the path and "
                f"the network, or point data.root at a folder containing {BATCH_FOLDER}/"
            ) from error
        images = torch.from_numpy(np.ascontiguousarray(np.asarray(dataset.data).transpose(0, 3, 1, 2)))
        labels = torch.from_numpy(np.asarray(dataset.targets, dtype=np.int64))
        splits.append(TensorSplit(resize_square(images, resolution=cfg.size), labels))
        classes = list(dataset.classes)
    return SourceData(
        train=splits[0],
        val=None,
        test=splits[1],
        class_names=tuple(classes),
        location=str(folder),
        origins={"train": "data_batch_1..5", "test": "test_batch"},
    )


def _cifar10_key(cfg: DataConfig) -> Hashable:
    folder = _cifar10_folder(cfg)
    return (cfg.size, str(folder), file_stamps(sorted(folder.glob("*_batch*")) if folder.is_dir() else []))


# ---- Fashion-MNIST through torchvision's reader: data.root, a system copy, an earlier or a new download

# train images, train labels, test images, test labels: torchvision's names, without .gz once extracted
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# Debian/Ubuntu package dataset-fashion-mnist installs the four .gz files here.
FASHION_MNIST_SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)
_FASHION_MNIST_RAW = Path("FashionMNIST") / "raw"  # where torchvision reads (and downloads to) below its root

_GET_FASHION_MNIST = (
    "get it in one of three ways: set data.root to a folder with the four idx files "
    "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
    "t10k-labels-idx1-ubyte[.gz]); or install the system package (apt-get install dataset-fashion-mnist, "
    f"files in {FASHION_MNIST_SYSTEM_DIRS[0]}); or set data.download=true to fetch it with torchvision"
)


def fashion_mnist_dirs(root: Path | None) -> list[Path]:
    """Folders searched in order; ``raw`` sub-folders cover torchvision's download layout."""
    dirs = [root, root / "raw", root / _FASHION_MNIST_RAW] if root else []
    return [*dirs, *FASHION_MNIST_SYSTEM_DIRS, default_cache_dir("fashion_mnist") / _FASHION_MNIST_RAW]


def fashion_mnist_files(root: Path | None) -> list[Path] | None:
    """The four idx files (each extracted or .gz) of the first folder holding all four, else None."""
    for directory in fashion_mnist_dirs(root):
        found = [
            next((directory / n for n in (stem, f"{stem}.gz") if (directory / n).is_file()), None)
            for stem in FASHION_MNIST_FILES
        ]
        if all(found):
            return [path for path in found if path is not None]
    return None


def _fashion_mnist_extracted(files: list[Path]) -> Path:
    """A torchvision root with ``files`` extracted into ``FashionMNIST/raw/``, made once in the cache.

    torchvision reads only uncompressed files in that layout, and nothing may be written beside a
    system copy, so .gz files are extracted (with torchvision's own extractor) into the cache; the
    folder is keyed by the files' paths, sizes and times, so replacing them extracts them again.
    """
    from torchvision.datasets.utils import extract_archive

    key = hashlib.sha256(repr(file_stamps(files)).encode()).hexdigest()[:16]
    root = default_cache_dir("fashion_mnist") / "extracted" / key
    if (root / _FASHION_MNIST_RAW).is_dir():
        return root
    (root / _FASHION_MNIST_RAW).parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root / _FASHION_MNIST_RAW.parent, prefix=".partial-"))
    for path in files:
        try:
            if path.suffix == ".gz":
                extract_archive(str(path), str(staging))
            else:
                os.symlink(path, staging / path.name)
        except (OSError, EOFError, zlib.error) as error:  # a cut-off or corrupt .gz
            shutil.rmtree(staging, ignore_errors=True)
            raise DataError(f"cannot extract {path}: {error}; re-download or replace it") from error
    try:
        staging.rename(root / _FASHION_MNIST_RAW)  # atomic: a concurrent worker sees all four files or none
    except OSError:  # another worker extracted them first
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _download_fashion_mnist(target: Path) -> None:
    from torchvision.datasets import FashionMNIST

    log.info("downloading Fashion-MNIST into %s", target)
    try:
        FashionMNIST(str(target), train=True, download=True)
    except (OSError, RuntimeError) as error:
        raise DataError(
            f"downloading Fashion-MNIST into {target} failed ({error}); {_GET_FASHION_MNIST}"
        ) from error


def _read_fashion_mnist(
    root: Path, folder: Path, *, train: bool, resolution: int
) -> tuple[TensorSplit, list[str]]:
    from torchvision.datasets import FashionMNIST

    try:
        dataset = FashionMNIST(str(root), train=train)
    except (AssertionError, TypeError, ValueError, RuntimeError, OSError) as error:  # its reader asserts
        raise DataError(
            f"the Fashion-MNIST idx files in {folder} are unreadable ({type(error).__name__}: {error}); "
            "replace them with the Fashion-MNIST files"
        ) from error
    images, labels, classes = dataset.data, dataset.targets, list(dataset.classes)
    if len(images) != len(labels):
        raise DataError(
            f"{folder} holds {len(images)} images but {len(labels)} labels; it is not Fashion-MNIST"
        )
    if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < len(classes):
        raise DataError(f"{folder} has labels outside 0..{len(classes) - 1}; it is not Fashion-MNIST")
    return TensorSplit(resize_square(images.unsqueeze(1), resolution=resolution), labels), classes


def load_fashion_mnist_source(cfg: DataConfig) -> SourceData:
    """60,000 train and 10,000 test grey images; validation is carved from train."""
    root = resolved_root(cfg)
    files = fashion_mnist_files(root)
    if files is None:
        if not cfg.download:
            searched = ", ".join(str(path) for path in fashion_mnist_dirs(root))
            raise DataError(f"Fashion-MNIST not found (searched {searched}); {_GET_FASHION_MNIST}")
        _download_fashion_mnist(root or default_cache_dir("fashion_mnist"))
        files = fashion_mnist_files(root)
        if files is None:
            raise DataError(f"the Fashion-MNIST download left no idx files; {_GET_FASHION_MNIST}")
    folder = files[0].parent
    in_place = folder.parts[-2:] == _FASHION_MNIST_RAW.parts and not any(
        path.suffix == ".gz" for path in files
    )
    reader_root = folder.parent.parent if in_place else _fashion_mnist_extracted(files)
    train, classes = _read_fashion_mnist(reader_root, folder, train=True, resolution=cfg.size)
    test, _ = _read_fashion_mnist(reader_root, folder, train=False, resolution=cfg.size)
    return SourceData(
        train=train,
        val=None,
        test=test,
        class_names=tuple(classes),
        location=str(folder),
        origins={"train": files[0].name, "test": files[2].name},
    )


def _fashion_mnist_key(cfg: DataConfig) -> Hashable:
    return (cfg.size, str(resolved_root(cfg)), file_stamps(fashion_mnist_files(resolved_root(cfg)) or []))


# ---- image folders

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
    train_role = POOL if layout.is_flat else "train"
    if not len(splits[train_role]):
        raise DataError(f"{layout.folders[train_role]} has no usable images: the train pool would be empty")
    origins = {"train": "class folders" if layout.is_flat else "train/"}
    held_out: dict[str, TensorSplit] = {}
    for role in ("val", "test"):
        if role in splits and not len(splits[role]):
            log.warning("%s/ has no usable images; treating it as absent", layout.folders[role].name)
        elif role in splits:
            held_out[role] = splits[role]
            origins[role] = f"{layout.folders[role].name}/"
    if list(held_out) == ["val"]:  # the only held-out folder is the test split (see the module's rules)
        held_out = {"test": held_out["val"]}
        origins["test"] = origins.pop("val") + ", the only held-out folder, used as test"
    return SourceData(
        train=splits[train_role],
        val=held_out.get("val"),
        test=held_out.get("test"),
        class_names=class_names,
        location=str(layout.root),
        origins=origins,
    )


def _imagefolder_key(cfg: DataConfig) -> Hashable:
    layout = scan_layout(_root(cfg))
    return (cfg.size, str(layout.root), layout.signature())


# ---- the registry

SOURCES: Mapping[DatasetName, Source] = MappingProxyType(
    {
        DatasetName.digits: Source(load=load_digits_source, cache_key=lambda cfg: (cfg.size,)),
        DatasetName.fashion_mnist: Source(load=load_fashion_mnist_source, cache_key=_fashion_mnist_key),
        DatasetName.cifar10: Source(load=load_cifar10_source, cache_key=_cifar10_key),
        DatasetName.synthetic: Source(
            load=load_synthetic_source,
            cache_key=lambda cfg: (cfg.size, cfg.num_classes, cfg.samples_per_class, cfg.split_seed),
        ),
        DatasetName.imagefolder: Source(load=load_imagefolder_source, cache_key=_imagefolder_key),
    }
)
