from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tlbench.config.schema import DataConfig, DatasetName
from tlbench.data.sources import fashion_mnist
from tlbench.data.sources.fashion_mnist import CLASS_NAMES, load_fashion_mnist_source
from tlbench.data.sources.idx import write_idx
from tlbench.errors import DataError

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def write_fake(folder: Path, *, train: int = 30, test: int = 10, suffix: str = ".gz") -> Path:
    """Tiny Fashion-MNIST-shaped idx files; pixel value == label * 20 so labels can be checked."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("t10k", test)):
        labels = (np.arange(count) % 10).astype(np.uint8)
        images = np.repeat(labels * 20, 28 * 28).reshape(count, 28, 28).astype(np.uint8)
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels)
    return folder


@pytest.fixture
def no_system_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # tests must not find this machine's copy or a user's earlier download
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIRS", (tmp_path / "no-system-copy",))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("layout", ["", "raw", "FashionMNIST/raw"])
def test_reads_idx_files_from_root(tmp_path: Path, no_system_copy: None, suffix: str, layout: str) -> None:
    write_fake(tmp_path / "fm" / layout, suffix=suffix)
    data = load_fashion_mnist_source(
        DataConfig(name=DatasetName.fashion_mnist, root=str(tmp_path / "fm"), resolution=32)
    )
    # train and test come from the files; no own val; grey images resized; labels match pixels
    assert (len(data.train), len(data.test or ()), data.val) == (30, 10, None)
    assert data.train.images.shape == (30, 1, 32, 32) and data.class_names == CLASS_NAMES
    assert np.array_equal(data.train.images[:, 0, 16, 16].numpy(), data.train.labels.numpy() * 20)


def test_missing_everywhere_names_all_three_ways(tmp_path: Path, no_system_copy: None) -> None:
    cfg = DataConfig(name=DatasetName.fashion_mnist, root=str(tmp_path / "empty"))
    # the error lists data.root, the system package and data.download
    with pytest.raises(DataError, match=r"data\.root.*dataset-fashion-mnist.*data\.download=true"):
        load_fashion_mnist_source(cfg)


def test_falls_back_to_system_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = write_fake(tmp_path / "system", train=20)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIRS", (system,))
    data = load_fashion_mnist_source(DataConfig(name=DatasetName.fashion_mnist, root=str(tmp_path / "none")))
    # a root without the files falls through to the system copy
    assert len(data.train) == 20 and data.location == str(system)


def test_download_goes_through_torchvision(
    tmp_path: Path, no_system_copy: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets

    calls: list[str] = []

    class FakeFashionMNIST:
        def __init__(self, root: str, *, train: bool, download: bool) -> None:
            calls.append(root)
            write_fake(Path(root) / "FashionMNIST" / "raw", train=20, suffix="")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    cfg = DataConfig(name=DatasetName.fashion_mnist, download=True)
    data = load_fashion_mnist_source(cfg)
    # without data.root the download lands in ~/.cache/tlbench/fashion_mnist and is then read
    assert (
        calls == [str(tmp_path / "home" / ".cache" / "tlbench" / "fashion_mnist")] and len(data.train) == 20
    )


def test_wrong_files_are_reported(tmp_path: Path, no_system_copy: None) -> None:
    folder = write_fake(tmp_path / "fm")
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.full(30, 42, dtype=np.uint8))
    # labels outside 0..9 mean these are not Fashion-MNIST files
    with pytest.raises(DataError, match=r"outside 0\.\.9"):
        load_fashion_mnist_source(DataConfig(name=DatasetName.fashion_mnist, root=str(folder)))


@pytest.mark.skipif(not SYSTEM_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_system_copy() -> None:
    data = load_fashion_mnist_source(DataConfig(name=DatasetName.fashion_mnist, resolution=28))
    # the real files: 60k train, 10k test, balanced classes
    assert (len(data.train), len(data.test or ())) == (60000, 10000)
    assert np.bincount(data.train.labels.numpy()).tolist() == [6000] * 10
