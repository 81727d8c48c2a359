"""Bring uint8 image tensors of array datasets (digits, Fashion-MNIST, CIFAR-10) to a resolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_CHUNK = 2048  # images per interpolation call: bounds the float32 working memory


def resize_square(images: torch.Tensor, *, resolution: int) -> torch.Tensor:
    """Resize the shorter side to ``resolution`` (antialiased bilinear) and centre-crop a square.

    Array datasets are square already, so this is usually a plain resize; the crop keeps the rule
    identical to the one used for image folders. Returns ``images`` itself when nothing changes.

    Args:
        images: uint8 ``[N, C, H, W]``.
        resolution: Side of the output square.
    """
    height, width = int(images.shape[-2]), int(images.shape[-1])
    if height == width == resolution:
        return images
    scale = resolution / min(height, width)
    size = (max(resolution, round(height * scale)), max(resolution, round(width * scale)))
    top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    out = torch.empty((images.shape[0], images.shape[1], resolution, resolution), dtype=torch.uint8)
    for start in range(0, images.shape[0], _CHUNK):
        chunk = images[start : start + _CHUNK].float()
        resized = F.interpolate(chunk, size=size, mode="bilinear", antialias=True, align_corners=False)
        cropped = resized[..., top : top + resolution, left : left + resolution]
        out[start : start + _CHUNK] = cropped.round_().clamp_(0, 255).to(torch.uint8)
    return out
