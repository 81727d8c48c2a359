from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from tlbench.config.schema import DataConfig, DatasetName
from tlbench.data import sources
from tlbench.data.load import stratified_split
from tlbench.data.sources import (
    SOURCES,
    generate_patterns,
    load_cifar10_source,
    load_digits_source,
    load_fashion_mnist_source,
    load_synthetic_source,
    resize_square,
)
from tlbench.errors import DataError


def test_every_dataset_name_has_a_source() -> None:
    # a new DatasetName without a registered source fails here, not mid-sweep
    assert set(SOURCES) == set(DatasetName)


@pytest.mark.parametrize(
    ("shape", "resolution"), [((3, 1, 8, 8), 32), ((2, 3, 32, 32), 16), ((2, 3, 10, 20), 8)]
)
def test_resize_square_shape_and_dtype(shape: tuple[int, ...], resolution: int) -> None:
    out = resize_square(torch.randint(0, 256, shape, dtype=torch.uint8), resolution=resolution)
    # square uint8 output at the requested side, channels kept
    assert out.shape == (shape[0], shape[1], resolution, resolution) and out.dtype == torch.uint8


def test_resize_square_keeps_constant_images_exact() -> None:
    images = torch.full((2, 1, 8, 8), 77, dtype=torch.uint8)
    # interpolation of a flat image is flat, with no rounding drift
    assert torch.equal(
        resize_square(images, resolution=24), torch.full((2, 1, 24, 24), 77, dtype=torch.uint8)
    )


def test_resize_square_noop_returns_input() -> None:
    images = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    # nothing to do: no copy
    assert resize_square(images, resolution=16) is images


def test_resize_square_crops_the_centre() -> None:
    images = torch.zeros(1, 1, 4, 12, dtype=torch.uint8)
    images[..., 4:8] = 255  # a bright band in the middle third
    # the centre square of a 4x12 image is exactly the band
    assert resize_square(images, resolution=4).min() == 255


@pytest.mark.parametrize("resolution", [8, 32])
def test_digits_shapes(resolution: int) -> None:
    data = load_digits_source(DataConfig(resolution=resolution))
    # all 1,797 grey images at the resolution, ten classes, no splits of their own
    assert data.train.images.shape == (1797, 1, resolution, resolution)
    assert data.class_names == tuple("0123456789") and data.val is None and data.test is None


def test_digits_values_scaled_to_full_range() -> None:
    data = load_digits_source(DataConfig(resolution=8))
    expected = np.rint(load_digits().images * 255 / 16).astype(np.uint8)
    # at the native 8x8, pixels are exactly 0..16 scaled to 0..255 and labels are the targets
    assert np.array_equal(data.train.images[:, 0].numpy(), expected)
    assert np.array_equal(data.train.labels.numpy(), load_digits().target)
    assert data.train.images.max() == 255


@pytest.mark.parametrize(("classes", "per_class", "resolution"), [(2, 3, 8), (4, 60, 32), (5, 10, 64)])
def test_synthetic_shapes(classes: int, per_class: int, resolution: int) -> None:
    cfg = DataConfig(
        name=DatasetName.synthetic, num_classes=classes, samples_per_class=per_class, resolution=resolution
    )
    data = load_synthetic_source(cfg)
    # classes x samples RGB uint8 images, balanced labels, no own splits
    assert data.train.images.shape == (classes * per_class, 3, resolution, resolution)
    assert torch.bincount(data.train.labels).tolist() == [per_class] * classes
    assert len(data.class_names) == classes and data.val is None and data.test is None


def test_synthetic_is_seeded_by_split_seed() -> None:
    images = [
        generate_patterns(num_classes=3, samples_per_class=4, resolution=16, seed=s)[0] for s in (0, 0, 1)
    ]
    # same seed, same images; another seed, other images
    assert torch.equal(images[0], images[1]) and not torch.equal(images[0], images[2])


def test_tiny_cnn_beats_chance() -> None:
    torch.manual_seed(0)
    images, labels = generate_patterns(num_classes=4, samples_per_class=40, resolution=16, seed=0)
    val, train = (torch.from_numpy(i) for i in stratified_split(labels.numpy(), fractions=(0.25,), seed=0))
    x = images.float() / 127.5 - 1
    model = nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    for _ in range(40):  # plain gradient descent: torch.optim would import torch._dynamo (seconds)
        model.zero_grad()
        nn.functional.cross_entropy(model(x[train]), labels[train]).backward()
        with torch.no_grad():
            for parameter in model.parameters():
                assert parameter.grad is not None
                parameter.sub_(0.5 * parameter.grad)
    with torch.no_grad():
        accuracy = (model(x[val]).argmax(1) == labels[val]).float().mean().item()
    # four classes: chance is 0.25; the patterns are learnable well above it
    assert accuracy > 0.6


NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_fake_cifar(root: Path, *, per_batch: int = 4) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for index, name in enumerate(batches):
        labels = [(index + j) % 10 for j in range(per_batch)]
        data = np.repeat(np.array(labels, dtype=np.uint8) * 20, 3072).reshape(per_batch, 3072)
        (folder / name).write_bytes(pickle.dumps({"data": data, "labels": labels}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": NAMES}))
    return root


def test_reads_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar as cifar

    # the fake batches cannot match torchvision's md5 sums; everything else is the real reader
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    root = write_fake_cifar(tmp_path)
    data = load_cifar10_source(DataConfig(name=DatasetName.cifar10, root=str(root), resolution=16))
    # 5 train batches and 1 test batch, RGB at the resolution, names from the meta file
    assert data.train.images.shape == (20, 3, 16, 16) and len(data.test or ()) == 4 and data.val is None
    assert data.class_names == tuple(NAMES)
    assert np.array_equal(data.train.images[:, 1, 8, 8].numpy(), data.train.labels.numpy() * 20)


def test_missing_explains_root_and_download(tmp_path: Path) -> None:
    cfg = DataConfig(name=DatasetName.cifar10, root=str(tmp_path))
    # the error names the folder to provide and the download switch
    with pytest.raises(DataError, match=r"cifar-10-batches-py.*data\.download=true"):
        load_cifar10_source(cfg)


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
    monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIRS", (tmp_path / "no-system-copy",))
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
    monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIRS", (system,))
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
