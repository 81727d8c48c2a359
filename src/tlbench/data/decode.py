"""Decode one image file into a square uint8 RGB array at the target resolution.

Every Pillow mode ends up as 8-bit RGB: transparency is composited over white (what a viewer
shows), high-bit-depth greys are scaled rather than clipped, CMYK and palettes are converted. The
image is turned upright by its EXIF orientation, then its shorter side is resized to the resolution
(antialiased) and the centre square is kept — one resampling step, through Pillow's ``box``.
"""

from __future__ import annotations

import contextlib
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
    pixels: np.ndarray | None  # uint8 [3, R, R], or None when the file is unusable
    digest: str  # sha256 of the file bytes (finds duplicates; "" if unreadable from disk)
    error: str | None = None  # why the file was skipped


def grey_levels(values: np.ndarray, *, mode: str) -> np.ndarray:
    """A high-depth grey image's values (modes I;16*, I, F) scaled, not clipped, to uint8: 16-bit modes
    by their full range; for ``I`` and ``F`` the observed range picks the convention ([0, 1] floats,
    [0, 255] or [0, 65535] levels), and anything else is stretched min-to-max."""
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


def decode_image(image: Image.Image, *, resolution: int) -> np.ndarray:
    """uint8 ``[3, R, R]`` pixels of an opened image (first frame of animations). Not yet loaded (straight
    from :func:`PIL.Image.open`), it decodes exactly as its file does in a dataset; already loaded, it
    skips libjpeg's downscaling and can differ in the last levels."""
    image.draft(None, (resolution, resolution))  # JPEG: let libjpeg downscale while decoding
    image.load()
    with contextlib.suppress(Exception):  # a malformed EXIF block should not cost the picture itself
        image = ImageOps.exif_transpose(image)
    rgb = to_rgb(image)
    # shorter side to the resolution and the centre square, in one antialiased resample
    side = min(rgb.size)
    left, top = (rgb.width - side) / 2, (rgb.height - side) / 2
    square = rgb.resize(
        (resolution, resolution), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side)
    )
    return np.asarray(square).transpose(2, 0, 1).copy()


def decode_bytes(data: bytes, *, resolution: int) -> np.ndarray:
    """uint8 ``[3, R, R]`` pixels of an encoded image; raises what Pillow raises for unreadable data."""
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
