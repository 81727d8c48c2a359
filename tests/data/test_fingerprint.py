from __future__ import annotations

import numpy as np
import pytest
import torch

from tlbench.data.fingerprint import FINGERPRINT_LENGTH, splits_fingerprint, tensor_digest

DATASET = {"name": "digits", "content": "abc", "resolution": 32}
PARAMS = {"split_seed": 0, "val_fraction": 0.2}


def test_fingerprint_is_short_hex_and_stable() -> None:
    first = splits_fingerprint(dataset=DATASET, train_indices=np.arange(5), split_params=PARAMS)
    # a short hex key that does not change between calls
    assert len(first) == FINGERPRINT_LENGTH and int(first, 16) >= 0
    assert first == splits_fingerprint(
        dataset=dict(DATASET), train_indices=np.arange(5), split_params=dict(PARAMS)
    )


@pytest.mark.parametrize(
    ("dataset", "indices", "params"),
    [
        ({**DATASET, "resolution": 64}, np.arange(5), PARAMS),  # another resolution
        ({**DATASET, "content": "abd"}, np.arange(5), PARAMS),  # other pixels
        (DATASET, np.array([0, 1, 2, 3, 6]), PARAMS),  # another training subset
        (DATASET, np.arange(5), {**PARAMS, "split_seed": 1}),  # other val/test
    ],
)
def test_fingerprint_changes_with_each_ingredient(dataset: dict, indices: np.ndarray, params: dict) -> None:
    base = splits_fingerprint(dataset=DATASET, train_indices=np.arange(5), split_params=PARAMS)
    # any change to what the features would be computed from changes the key
    assert splits_fingerprint(dataset=dataset, train_indices=indices, split_params=params) != base


def test_tensor_digest_sees_content_shape_and_dtype() -> None:
    images = torch.zeros(2, 1, 3, 3, dtype=torch.uint8)
    changed = images.clone()
    changed[1, 0, 2, 2] = 1
    # one changed pixel, another shape or dtype: another digest; equal content: equal digest
    assert tensor_digest(images) == tensor_digest(images.clone())
    assert len({tensor_digest(images), tensor_digest(changed), tensor_digest(images.view(2, 3, 3))}) == 3
    assert tensor_digest(torch.zeros(4, dtype=torch.int64)) != tensor_digest(
        torch.zeros(4, dtype=torch.int32)
    )
