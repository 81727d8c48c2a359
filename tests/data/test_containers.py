from __future__ import annotations

import pytest
import torch

from tlbench.data import DataSplits, TensorSplit


def split(n: int, *, channels: int = 3) -> TensorSplit:
    return TensorSplit(torch.zeros(n, channels, 4, 4, dtype=torch.uint8), torch.zeros(n, dtype=torch.int64))


@pytest.mark.parametrize(
    ("images", "labels", "pattern"),
    [
        # float images are refused: splits hold uint8 so whole datasets fit on the device
        (torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.int64), "uint8"),
        # only grey or RGB
        (torch.zeros(2, 2, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), "uint8"),
        # labels must be int64 class indices
        (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int32), "int64"),
        # one label per image
        (
            torch.zeros(2, 3, 4, 4, dtype=torch.uint8),
            torch.zeros(3, dtype=torch.int64),
            "2 images but 3 labels",
        ),
    ],
)
def test_tensor_split_validates(images: torch.Tensor, labels: torch.Tensor, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        TensorSplit(images, labels)


def test_tensor_split_len_and_take() -> None:
    whole = TensorSplit(
        torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 1, 2, 2).contiguous(), torch.arange(5)
    )
    taken = whole.take(torch.tensor([4, 1]))
    # len counts samples; take keeps the given order
    assert len(whole) == 5 and taken.labels.tolist() == [4, 1] and taken.images[:, 0, 0, 0].tolist() == [4, 1]


@pytest.mark.parametrize("channels", [1, 3])
def test_data_splits_properties(channels: int) -> None:
    splits = DataSplits(
        train=split(4, channels=channels),
        val=split(2, channels=channels),
        test=split(2, channels=channels),
        class_names=("a", "b", "c"),
        pool_size=10,
        description="d",
        fingerprint="f",
    )
    # num_classes counts names; channels reports the stored (not the normalised) channel count
    assert splits.num_classes == 3 and splits.channels == channels
