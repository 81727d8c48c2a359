"""Fashion-MNIST from idx files: data.root, a system copy, a previous download, or a new download."""

from __future__ import annotations

import logging
from collections.abc import Hashable
from pathlib import Path

import numpy as np
import torch

from tlbench.config.schema import DataConfig
from tlbench.data.containers import TensorSplit
from tlbench.data.resize import resize_square
from tlbench.data.sources.base import Source, SourceData, default_cache_dir, file_stamps, resolved_root
from tlbench.data.sources.idx import read_idx
from tlbench.errors import DataError

log = logging.getLogger(__name__)

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FILE_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Debian/Ubuntu package dataset-fashion-mnist installs the four .gz files here.
SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)


_HOW_TO_GET = (
    "get it in one of three ways: set data.root to a folder with the four idx files "
    "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
    "t10k-labels-idx1-ubyte[.gz]); or install the system package (apt-get install dataset-fashion-mnist, "
    f"files in {SYSTEM_DIRS[0]}); or set data.download=true to fetch it with torchvision"
)


def _find_file(directory: Path, stem: str) -> Path | None:
    for name in (stem, f"{stem}.gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def candidate_dirs(root: Path | None) -> list[Path]:
    """Folders searched in order; ``raw`` sub-folders cover torchvision's download layout."""
    dirs = [root, root / "raw", root / "FashionMNIST" / "raw"] if root else []
    return [*dirs, *SYSTEM_DIRS, default_cache_dir("fashion_mnist") / "FashionMNIST" / "raw"]


def find_files(root: Path | None) -> dict[str, tuple[Path, Path]] | None:
    """Split -> (images file, labels file) from the first folder holding all four, else None."""
    for directory in candidate_dirs(root):
        found: dict[str, tuple[Path, Path]] = {}
        for split, (image_stem, label_stem) in FILE_STEMS.items():
            images, labels = _find_file(directory, image_stem), _find_file(directory, label_stem)
            if images is None or labels is None:
                break
            found[split] = (images, labels)
        else:
            return found
    return None


def _download(target: Path) -> dict[str, tuple[Path, Path]]:
    from torchvision.datasets import FashionMNIST

    log.info("downloading Fashion-MNIST into %s", target)
    try:
        FashionMNIST(str(target), train=True, download=True)
    except (OSError, RuntimeError) as error:
        raise DataError(f"downloading Fashion-MNIST into {target} failed ({error}); {_HOW_TO_GET}") from error
    files = find_files(target)
    if files is None:
        raise DataError(f"the Fashion-MNIST download into {target} left no idx files; {_HOW_TO_GET}")
    return files


def _read_split(images_path: Path, labels_path: Path, *, resolution: int) -> TensorSplit:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{images_path} ({images.dtype} {images.shape}) and {labels_path} "
            f"({labels.dtype} {labels.shape}) are not matching uint8 [N, H, W] images and [N] labels; "
            "replace them with the Fashion-MNIST files"
        )
    if labels.size and not 0 <= int(labels.min()) <= int(labels.max()) < len(CLASS_NAMES):
        raise DataError(
            f"{labels_path} has labels outside 0..{len(CLASS_NAMES) - 1}; it is not Fashion-MNIST"
        )
    pixels = resize_square(torch.from_numpy(images).unsqueeze(1), resolution=resolution)
    return TensorSplit(pixels, torch.from_numpy(labels.astype(np.int64)))


def load_fashion_mnist_source(cfg: DataConfig) -> SourceData:
    """60,000 train and 10,000 test grey images; validation is carved from train."""
    root = resolved_root(cfg)
    files = find_files(root)
    if files is None:
        if not cfg.download:
            searched = ", ".join(str(path) for path in candidate_dirs(root))
            raise DataError(f"Fashion-MNIST not found (searched {searched}); {_HOW_TO_GET}")
        files = _download(root or default_cache_dir("fashion_mnist"))
    train, test = (_read_split(*files[split], resolution=cfg.size) for split in ("train", "test"))
    return SourceData(
        train=train,
        val=None,
        test=test,
        class_names=CLASS_NAMES,
        location=str(files["train"][0].parent),
        origins={"train": files["train"][0].name, "test": files["test"][0].name},
    )


def _cache_key(cfg: DataConfig) -> Hashable:
    files = find_files(resolved_root(cfg))
    paths = [path for pair in files.values() for path in pair] if files else []
    return (cfg.size, str(resolved_root(cfg)), file_stamps(paths))


SOURCE = Source(load=load_fashion_mnist_source, cache_key=_cache_key)
