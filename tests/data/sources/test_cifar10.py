from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from tlbench.config.schema import DataConfig, DatasetName
from tlbench.data.sources.cifar10 import load_cifar10_source
from tlbench.errors import DataError

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
