from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from tlbench.config.schema import DataConfig
from tlbench.data.sources.digits import load_digits_source


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
