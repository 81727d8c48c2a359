from __future__ import annotations

import pytest
import torch

from tlbench.data.resize import resize_square


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
