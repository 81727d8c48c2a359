"""Fashion-MNIST by torchvision's reader: from data.root, a system copy, an earlier or a new download."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import zlib
from collections.abc import Hashable
from pathlib import Path

from tlbench.config.schema import DataConfig
from tlbench.data.containers import TensorSplit
from tlbench.data.resize import resize_square
from tlbench.data.sources.base import Source, SourceData, default_cache_dir, file_stamps, resolved_root
from tlbench.errors import DataError

log = logging.getLogger(__name__)

# train images, train labels, test images, test labels: torchvision's names, without .gz once extracted
FILE_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# Debian/Ubuntu package dataset-fashion-mnist installs the four .gz files here.
SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)
_RAW = Path("FashionMNIST") / "raw"  # where torchvision reads (and downloads to) below its root

_HOW_TO_GET = (
    "get it in one of three ways: set data.root to a folder with the four idx files "
    "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
    "t10k-labels-idx1-ubyte[.gz]); or install the system package (apt-get install dataset-fashion-mnist, "
    f"files in {SYSTEM_DIRS[0]}); or set data.download=true to fetch it with torchvision"
)


def candidate_dirs(root: Path | None) -> list[Path]:
    """Folders searched in order; ``raw`` sub-folders cover torchvision's download layout."""
    dirs = [root, root / "raw", root / _RAW] if root else []
    return [*dirs, *SYSTEM_DIRS, default_cache_dir("fashion_mnist") / _RAW]


def find_files(root: Path | None) -> list[Path] | None:
    """The four idx files (each extracted or .gz) of the first folder holding all four, else None."""
    for directory in candidate_dirs(root):
        found = [
            next((directory / n for n in (stem, f"{stem}.gz") if (directory / n).is_file()), None)
            for stem in FILE_STEMS
        ]
        if all(found):
            return [path for path in found if path is not None]
    return None


def _extracted(files: list[Path]) -> Path:
    """A torchvision root with ``files`` extracted into ``FashionMNIST/raw/``, made once in the cache.

    torchvision reads only uncompressed files in that layout, and nothing may be written beside a
    system copy, so .gz files are extracted (with torchvision's own extractor) into the cache; the
    folder is keyed by the files' paths, sizes and times, so replacing them extracts them again.
    """
    from torchvision.datasets.utils import extract_archive

    key = hashlib.sha256(repr(file_stamps(files)).encode()).hexdigest()[:16]
    root = default_cache_dir("fashion_mnist") / "extracted" / key
    if (root / _RAW).is_dir():
        return root
    (root / _RAW).parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root / _RAW.parent, prefix=".partial-"))
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
        staging.rename(root / _RAW)  # atomic: a concurrent worker sees all four files or none
    except OSError:  # another worker extracted them first
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _download(target: Path) -> None:
    from torchvision.datasets import FashionMNIST

    log.info("downloading Fashion-MNIST into %s", target)
    try:
        FashionMNIST(str(target), train=True, download=True)
    except (OSError, RuntimeError) as error:
        raise DataError(f"downloading Fashion-MNIST into {target} failed ({error}); {_HOW_TO_GET}") from error


def _read_split(root: Path, folder: Path, *, train: bool, resolution: int) -> tuple[TensorSplit, list[str]]:
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
    files = find_files(root)
    if files is None:
        if not cfg.download:
            searched = ", ".join(str(path) for path in candidate_dirs(root))
            raise DataError(f"Fashion-MNIST not found (searched {searched}); {_HOW_TO_GET}")
        _download(root or default_cache_dir("fashion_mnist"))
        files = find_files(root)
        if files is None:
            raise DataError(f"the Fashion-MNIST download left no idx files; {_HOW_TO_GET}")
    folder = files[0].parent
    in_place = folder.parts[-2:] == _RAW.parts and not any(path.suffix == ".gz" for path in files)
    reader_root = folder.parent.parent if in_place else _extracted(files)
    train, classes = _read_split(reader_root, folder, train=True, resolution=cfg.size)
    test, _ = _read_split(reader_root, folder, train=False, resolution=cfg.size)
    return SourceData(
        train=train,
        val=None,
        test=test,
        class_names=tuple(classes),
        location=str(folder),
        origins={"train": files[0].name, "test": files[2].name},
    )


def _cache_key(cfg: DataConfig) -> Hashable:
    return (cfg.size, str(resolved_root(cfg)), file_stamps(find_files(resolved_root(cfg)) or []))


SOURCE = Source(load=load_fashion_mnist_source, cache_key=_cache_key)
