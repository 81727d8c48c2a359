from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from tlbench.config.schema import DataConfig, DatasetName
from tlbench.data.sources import fashion_mnist
from tlbench.data.sources.fashion_mnist import load_fashion_mnist_source
from tlbench.errors import DataError

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
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


def write_idx(path: Path, array: np.ndarray) -> None:
    """``array`` as a uint8 idx file: 0, 0, type 8, ndim, big-endian dims, then the bytes (gzip if .gz)."""
    body = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes() + array.tobytes()
    path.write_bytes(gzip.compress(body) if path.suffix == ".gz" else body)


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
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the .gz files are extracted into ~/.cache
    before = sorted(system.iterdir())
    data = load_fashion_mnist_source(DataConfig(name=DatasetName.fashion_mnist, root=str(tmp_path / "none")))
    # a root without the files falls through to the system copy
    assert len(data.train) == 20 and data.location == str(system)
    # the system folder is only read: the extracted copy goes to the cache
    assert sorted(system.iterdir()) == before and (tmp_path / "home" / ".cache" / "tlbench").is_dir()


def test_download_goes_through_torchvision(
    tmp_path: Path, no_system_copy: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchvision.datasets import FashionMNIST

    calls: list[str] = []

    def fake_download(self: FashionMNIST) -> None:  # what torchvision's download leaves: extracted files
        calls.append(str(self.root))
        write_fake(Path(self.root) / "FashionMNIST" / "raw", train=20, suffix="")

    monkeypatch.setattr(FashionMNIST, "download", fake_download)
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


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "unreadable"),  # first byte must be 0
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unreadable"),  # unknown type code
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05", "unreadable"),  # body shorter than the header says
    ],
    ids=["first-byte", "type-code", "short-body"],
)
def test_malformed_files_raise_data_error(
    tmp_path: Path, no_system_copy: None, body: bytes, pattern: str
) -> None:
    folder = write_fake(tmp_path / "fm", suffix="")
    (folder / "train-labels-idx1-ubyte").write_bytes(body)
    # a broken idx file is one DataError naming the folder, not an assertion from torchvision's reader
    with pytest.raises(DataError, match=f"{pattern}.*replace them"):
        load_fashion_mnist_source(DataConfig(name=DatasetName.fashion_mnist, root=str(folder)))


def test_corrupt_gzip_names_the_file(tmp_path: Path, no_system_copy: None) -> None:
    folder = write_fake(tmp_path / "fm")
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00" * 100)[:20])
    # a cut-off download is reported with its path, not as a zlib traceback
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz"):
        load_fashion_mnist_source(DataConfig(name=DatasetName.fashion_mnist, root=str(folder)))


@pytest.mark.skipif(not SYSTEM_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_system_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    data = load_fashion_mnist_source(DataConfig(name=DatasetName.fashion_mnist, resolution=28))
    # the real files: 60k train, 10k test, balanced classes
    assert (len(data.train), len(data.test or ())) == (60000, 10000)
    assert np.bincount(data.train.labels.numpy()).tolist() == [6000] * 10
    # the tensors are the files' bytes: pixels after the 16-byte header, labels after the 8-byte one
    pixels = np.frombuffer(
        gzip.decompress((SYSTEM_DIR / "t10k-images-idx3-ubyte.gz").read_bytes())[16:], np.uint8
    )
    labels = np.frombuffer(
        gzip.decompress((SYSTEM_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:], np.uint8
    )
    assert data.test is not None and data.location == str(SYSTEM_DIR)
    assert np.array_equal(data.test.images.numpy().reshape(-1), pixels)
    assert np.array_equal(data.test.labels.numpy(), labels)
