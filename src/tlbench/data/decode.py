"""Decode one image file into a square uint8 RGB array at the target resolution.

Every Pillow mode ends up as 8-bit RGB: transparency is composited over white (what a viewer
shows), high-bit-depth greys are scaled rather than clipped, CMYK and palettes are converted. The
image is turned upright by its EXIF orientation, then its shorter side is resized to the resolution
(antialiased) and the centre square is kept — one resampling step, through Pillow's ``box``.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

_WHITE = (255, 255, 255)
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_UINT16_TO_UINT8 = 255.0 / 65535.0


@dataclass(frozen=True)
class DecodedFile:
    """Outcome of decoding one file: pixels, or the reason it was skipped.

    Attributes:
        pixels: uint8 ``[3, R, R]``, or None when the file is unusable.
        digest: sha256 of the file bytes (finds duplicates; empty string if unreadable from disk).
        error: Why the file was skipped, or None.
    """

    pixels: np.ndarray | None
    digest: str
    error: str | None = None


def grey_levels(values: np.ndarray, *, mode: str) -> np.ndarray:
    """Map the values of a high-depth grey image (modes I;16*, I, F) to uint8 by scaling, not clipping.

    16-bit modes use their full range (65535 -> 255). For ``I`` and ``F`` the observed range picks
    the convention: [0, 1] floats are unit intensities, [0, 255] are 8-bit levels, [0, 65535] are
    16-bit levels; anything else (negative or larger values) is stretched min-to-max.
    """
    values = np.nan_to_num(values.astype(np.float64))
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode in _SIXTEEN_BIT_MODES:
        scaled = values * _UINT16_TO_UINT8
    elif low < 0 or high > 65535:
        scaled = (values - low) * (255.0 / (high - low))
    elif mode == "F" and high <= 1.0:
        scaled = values * 255.0
    elif high <= 255:
        scaled = values
    else:
        scaled = values * _UINT16_TO_UINT8
    return np.rint(scaled).clip(0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB version of ``image`` in any Pillow mode."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        return Image.fromarray(grey_levels(np.asarray(image), mode=mode)).convert("RGB")
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        background = Image.new("RGBA", image.size, (*_WHITE, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a malformed EXIF block should not cost the picture itself
        return image


def square_crop_resize(image: Image.Image, *, resolution: int) -> Image.Image:
    """Shorter side to ``resolution`` and the centre square, in a single antialiased resample."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    box = (left, top, left + side, top + side)
    return image.resize((resolution, resolution), Image.Resampling.BILINEAR, box=box)


def decode_image(image: Image.Image, *, resolution: int) -> np.ndarray:
    """uint8 ``[3, R, R]`` pixels of an opened image (first frame of animations).

    An image straight from :func:`PIL.Image.open`, not yet loaded, decodes exactly as its file does
    in a dataset (a JPEG is downscaled by libjpeg while decoding); an image already loaded skips that
    step, so its pixels can differ in the last levels.
    """
    image.draft(None, (resolution, resolution))  # JPEG: let libjpeg downscale while decoding
    image.load()
    rgb = to_rgb(_upright(image))
    return np.asarray(square_crop_resize(rgb, resolution=resolution)).transpose(2, 0, 1).copy()


def decode_bytes(data: bytes, *, resolution: int) -> np.ndarray:
    """uint8 ``[3, R, R]`` pixels of an encoded image (first frame of animations).

    Raises:
        Exception: Whatever Pillow raises for unreadable data; :func:`decode_file` records it.
    """
    with Image.open(io.BytesIO(data)) as image:
        return decode_image(image, resolution=resolution)


def decode_file(path: Path, *, resolution: int) -> DecodedFile:
    """Decode ``path``, turning any failure into a :class:`DecodedFile` with the reason."""
    try:
        data = path.read_bytes()
    except OSError as error:
        return DecodedFile(None, "", f"cannot read: {error.strerror or error}")
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return DecodedFile(None, digest, "empty file")
    try:
        pixels = decode_bytes(data, resolution=resolution)
    except UnidentifiedImageError:
        return DecodedFile(None, digest, "not an image, or a format Pillow cannot read")
    except Exception as error:  # a corrupt file must never abort loading the rest of the dataset
        return DecodedFile(None, digest, f"{type(error).__name__}: {error}")
    return DecodedFile(pixels, digest)
