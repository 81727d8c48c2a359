from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlbench.data.decode import decode_bytes, decode_file, grey_levels, to_rgb

SIZE = (12, 8)


def encoded(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def transparent_palette() -> Image.Image:
    image = Image.new("P", SIZE, 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * (254 * 3))
    image.info["transparency"] = 0
    image.paste(0, (0, 0, 6, 8))  # left half transparent
    return image


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("RGB", SIZE, (1, 2, 3)), (1, 2, 3)),  # RGB unchanged
        (Image.new("L", SIZE, 90), (90, 90, 90)),  # grey repeated to 3 channels
        (Image.new("1", SIZE, 1), (255, 255, 255)),  # bilevel white is 255, not 1
        (Image.new("LA", SIZE, (90, 255)), (90, 90, 90)),  # opaque grey+alpha
        (Image.new("RGBA", SIZE, (10, 20, 30, 0)), (255, 255, 255)),  # transparent shows the white background
        (Image.new("RGBA", SIZE, (10, 20, 30, 255)), (10, 20, 30)),  # opaque colour kept
        (
            Image.new("RGB", SIZE, (10, 20, 30)).convert("P", palette=Image.Palette.ADAPTIVE),
            (10, 20, 30),
        ),  # palette
        (Image.new("RGB", SIZE, (0, 128, 255)).convert("CMYK"), (0, 128, 255)),  # CMYK converted
        (Image.fromarray(np.full(SIZE[::-1], 65535, np.uint16)), (255, 255, 255)),  # 16-bit max -> 255
        (
            Image.fromarray(np.full(SIZE[::-1], 257 * 40, np.uint16)),
            (40, 40, 40),
        ),  # 16-bit scaled, not clipped
        (Image.new("I", SIZE, 200), (200, 200, 200)),  # 32-bit int within 0..255 kept as 8-bit levels
        (Image.new("I", SIZE, 257 * 60), (60, 60, 60)),  # 32-bit int beyond 255 read as 16-bit levels
        (Image.new("F", SIZE, 0.5), (128, 128, 128)),  # unit floats scaled by 255
    ],
    ids=lambda v: v.mode if isinstance(v, Image.Image) else "",
)
def test_to_rgb_every_mode(image: Image.Image, expected: tuple[int, int, int]) -> None:
    rgb = to_rgb(image)
    # every Pillow mode becomes 8-bit RGB with the colour a viewer would see
    assert rgb.mode == "RGB" and rgb.getpixel((SIZE[0] - 1, 0)) == expected


def test_to_rgb_palette_transparency_over_white() -> None:
    rgb = to_rgb(transparent_palette())
    # transparent palette entries are white, opaque ones keep their colour
    assert rgb.getpixel((0, 0)) == (255, 255, 255) and rgb.getpixel((11, 0)) == (10, 200, 30)


@pytest.mark.parametrize(
    ("values", "mode", "expected"),
    [
        (np.array([[0, 65535]]), "I;16", [0, 255]),  # 16-bit: full range
        (np.array([[-10, 10]]), "I", [0, 255]),  # signed data: stretched min to max
        (np.array([[0.0, 1000.0]]), "F", [0, 4]),  # floats above 255 read as 16-bit levels
        (np.array([[np.nan, 1.0]]), "F", [0, 255]),  # NaN is treated as 0
    ],
)
def test_grey_levels(values: np.ndarray, mode: str, expected: list[int]) -> None:
    # high-depth values are scaled into 0..255 by the documented rule
    assert grey_levels(values, mode=mode).ravel().tolist() == expected


@pytest.mark.parametrize(
    ("fmt", "params"), [("PNG", {}), ("JPEG", {"quality": 95}), ("GIF", {}), ("BMP", {})]
)
def test_decode_bytes_shape_and_colour(fmt: str, params: dict) -> None:
    data = encoded(Image.new("RGB", (64, 40), (200, 100, 50)), fmt, **params)
    pixels = decode_bytes(data, resolution=16)
    # square uint8 [3, R, R] output, colour preserved within codec error
    assert pixels.shape == (3, 16, 16) and pixels.dtype == np.uint8
    assert np.abs(pixels.reshape(3, -1).mean(1) - [200, 100, 50]).max() < 4


def test_decode_bytes_centre_crops_the_shorter_side() -> None:
    image = Image.new("RGB", (30, 10), (0, 0, 0))
    image.paste((255, 255, 255), (10, 0, 20, 10))  # white middle square
    pixels = decode_bytes(encoded(image, "PNG"), resolution=5)
    # shorter side -> resolution, then the centre square: white, only the antialiased edges blend in black
    assert pixels[:, :, 1:4].min() == 255 and pixels.min() > 192


def test_decode_bytes_uses_first_frame_of_animations() -> None:
    frames = [Image.new("RGB", SIZE, colour).convert("P") for colour in ((255, 0, 0), (0, 0, 255))]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    # the first frame (red) is used
    assert decode_bytes(data, resolution=4)[:, 0, 0].tolist() == [255, 0, 0]


def test_decode_bytes_applies_exif_orientation() -> None:
    image = Image.new("RGB", (20, 10), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 10, 10))  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    pixels = decode_bytes(encoded(image, "PNG", exif=exif), resolution=10)
    # shown upright the image is 10 wide and 20 tall; its centre square straddles the white/black edge
    assert pixels[0, 0, 0] != pixels[0, 9, 0]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),  # zero bytes
        (b"hello, not an image", "not an image"),  # text behind an image name
        ("truncated", "OSError"),  # half a JPEG
    ],
)
def test_decode_file_reports_unreadable(tmp_path: Path, content: bytes | str, reason: str) -> None:
    path = tmp_path / "x.jpg"
    if content == "truncated":
        full = encoded(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
        content = full[: len(full) // 2]
    path.write_bytes(content if isinstance(content, bytes) else b"")
    result = decode_file(path, resolution=8)
    # no exception: no pixels, and the reason says why
    assert result.pixels is None and result.error is not None and reason in result.error


def test_decode_file_missing_file(tmp_path: Path) -> None:
    # a file that vanished between listing and reading is reported, not raised
    assert decode_file(tmp_path / "gone.png", resolution=8).error is not None


def test_decode_file_digest_identifies_content(tmp_path: Path) -> None:
    data = encoded(Image.new("RGB", SIZE, (5, 5, 5)), "PNG")
    (tmp_path / "a.png").write_bytes(data)
    (tmp_path / "b.png").write_bytes(data)
    # identical bytes, identical digest (used to find duplicates)
    assert (
        decode_file(tmp_path / "a.png", resolution=4).digest
        == decode_file(tmp_path / "b.png", resolution=4).digest
    )
