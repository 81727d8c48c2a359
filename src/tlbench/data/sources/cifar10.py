"""CIFAR-10 through torchvision's reader (python pickle batches in ``cifar-10-batches-py``)."""

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
from tlbench.errors import DataError

log = logging.getLogger(__name__)

BATCH_FOLDER = "cifar-10-batches-py"


def _root(cfg: DataConfig) -> Path:
    return resolved_root(cfg) or default_cache_dir("cifar10")


def _read(root: Path, *, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from torchvision.datasets import CIFAR10

    try:
        dataset = CIFAR10(str(root), train=train, download=download)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
        raise DataError(
            f"CIFAR-10 not found in {root / BATCH_FOLDER} ({error}); set data.root to the folder that "
            f"contains {BATCH_FOLDER}/, or set data.download=true to fetch it (about 170 MB)"
        ) from error
    except OSError as error:
        raise DataError(
            f"reading or downloading CIFAR-10 into {root} failed ({error}); check the path and the "
            f"network, or point data.root at a folder containing {BATCH_FOLDER}/"
        ) from error
    return np.asarray(dataset.data), np.asarray(dataset.targets, dtype=np.int64), list(dataset.classes)


def _split(pixels: np.ndarray, labels: np.ndarray, *, resolution: int) -> TensorSplit:
    images = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))
    return TensorSplit(resize_square(images, resolution=resolution), torch.from_numpy(labels))


def load_cifar10_source(cfg: DataConfig) -> SourceData:
    """50,000 train and 10,000 test colour images; validation is carved from train."""
    root = _root(cfg)
    train_pixels, train_labels, classes = _read(root, train=True, download=cfg.download)
    test_pixels, test_labels, _ = _read(root, train=False, download=False)
    return SourceData(
        train=_split(train_pixels, train_labels, resolution=cfg.size),
        val=None,
        test=_split(test_pixels, test_labels, resolution=cfg.size),
        class_names=tuple(classes),
        location=str(root / BATCH_FOLDER),
        origins={"train": "data_batch_1..5", "test": "test_batch"},
    )


def _cache_key(cfg: DataConfig) -> Hashable:
    folder = _root(cfg) / BATCH_FOLDER
    paths = sorted(folder.glob("*_batch*")) if folder.is_dir() else []
    return (cfg.size, str(folder), file_stamps(paths))


SOURCE = Source(load=load_cifar10_source, cache_key=_cache_key)
