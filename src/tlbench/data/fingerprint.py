"""Content keys for datasets and for the exact training subset of a run."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import numpy as np
import torch

FINGERPRINT_LENGTH = 16  # hex digits: 64 bits, ample for a local feature cache


def tensor_digest(*tensors: torch.Tensor) -> str:
    """sha256 over the shapes, dtypes and bytes of ``tensors``.

    Hashing decoded pixels rather than file names means a dataset copied elsewhere keeps its key,
    and any change of content or preprocessing changes it.
    """
    digest = hashlib.sha256()
    for tensor in tensors:
        contiguous = tensor.detach().cpu().contiguous()
        digest.update(f"{contiguous.dtype}{tuple(contiguous.shape)}".encode())
        digest.update(contiguous.reshape(-1).view(torch.uint8).numpy().data)  # a view: no copy
    return digest.hexdigest()


def splits_fingerprint(
    *,
    dataset: Mapping[str, object],
    train_indices: np.ndarray,
    split_params: Mapping[str, object],
) -> str:
    """Short sha256 of dataset identity, split parameters and the train subset indices.

    Args:
        dataset: JSON-serialisable identity: name, content digest, preprocessing, resolution.
        train_indices: Indices of the training subset within the train pool.
        split_params: Everything that decides val/test and the pool (seeds, fractions, caps).
    """
    payload = json.dumps({"dataset": dataset, "split": split_params}, sort_keys=True, default=str)
    digest = hashlib.sha256(payload.encode())
    digest.update(np.ascontiguousarray(train_indices, dtype=np.int64).tobytes())
    return digest.hexdigest()[:FINGERPRINT_LENGTH]
