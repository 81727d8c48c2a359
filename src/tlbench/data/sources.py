"""The built-in dataset sources (digits, Fashion-MNIST, CIFAR-10, synthetic) and the registry of all
sources, looked up by :class:`~tlbench.config.schema.DatasetName`; image folders are :mod:`.imagefolder`."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Hashable, Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F

from tlbench.config.schema import DataConfig, DatasetName
from tlbench.data import imagefolder
from tlbench.data.containers import Source, SourceData, TensorSplit
from tlbench.data.imagefolder import file_stamps
from tlbench.errors import DataError

log = logging.getLogger(__name__)


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
        DatasetName.imagefolder: imagefolder.SOURCE,
    }
)
