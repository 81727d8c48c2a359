"""Content-keyed cache of frozen-prefix activations: in memory (per process) and on disk (shared).

A key is the sha256 of everything the activations depend on: the prefix's weights, the boundary,
the split's pixels and labels, normalization, precision and device kind. Linear probes of a sweep
at different LRs therefore share one extraction, and workers share it through the disk layer.
Both layers are bounded in bytes and evict the least recently used entries. Disk file names are
the hex digest alone (checked), so no key can point outside the cache directory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class CachedFeatures:
    features: torch.Tensor  # float32, on the CPU
    seconds: float  # device-seconds the extraction took when it was computed (tlbench.cost.device's rule)
    flops: float  # forward FLOPs of that extraction
    device: str  # where it was computed

    @property
    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size()


def content_key(parts: Iterable[bytes | str]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def module_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's parameters and buffers (names, dtypes, shapes, values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    """LRU in memory, optional LRU directory on disk."""

    def __init__(self, *, max_bytes: int, directory: Path | None = None, max_disk_bytes: int = 0) -> None:
        self.max_bytes = max_bytes
        self.directory = directory.resolve() if directory is not None else None
        self.max_disk_bytes = max_disk_bytes
        self._memory: OrderedDict[str, CachedFeatures] = OrderedDict()

    def _path(self, key: str) -> Path:
        if not _HEX.fullmatch(key) or self.directory is None:
            raise ValueError(f"cache keys are sha256 hex digests, got {key!r}")
        path = (self.directory / f"{key}.pt").resolve()
        if path.parent != self.directory:  # defence in depth: the name alone decides the location
            raise ValueError(f"cache path {path} escapes {self.directory}")
        return path

    def get(self, key: str) -> CachedFeatures | None:
        entry = self._memory.get(key)
        if entry is not None:
            self._memory.move_to_end(key)
            return entry
        if self.directory is None:
            return None
        path = self._path(key)
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
            entry = CachedFeatures(
                raw["features"], float(raw["seconds"]), float(raw["flops"]), str(raw["device"])
            )
        except FileNotFoundError:
            return None
        except Exception as exc:  # a torn or foreign file is a miss, and is removed
            log.warning("ignoring unreadable feature-cache file %s (%s)", path, exc)
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # recency for disk LRU
        self._remember(key, entry)
        return entry

    def put(self, key: str, entry: CachedFeatures) -> None:
        self._remember(key, entry)
        if self.directory is None or self.max_disk_bytes <= 0 or entry.nbytes > self.max_disk_bytes:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(key)
        payload = {
            "features": entry.features,
            "seconds": entry.seconds,
            "flops": entry.flops,
            "device": entry.device,
        }
        with tempfile.NamedTemporaryFile(dir=self.directory, suffix=".tmp", delete=False) as handle:
            torch.save(payload, handle)
        os.replace(handle.name, path)  # atomic: readers see the old state or the whole file
        self._evict_disk()

    def _remember(self, key: str, entry: CachedFeatures) -> None:
        if entry.nbytes > self.max_bytes:
            return
        self._memory[key] = entry
        self._memory.move_to_end(key)
        while sum(e.nbytes for e in self._memory.values()) > self.max_bytes:
            self._memory.popitem(last=False)

    def _evict_disk(self) -> None:
        assert self.directory is not None
        files = sorted(self.directory.glob("*.pt"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for path in files:
            if total <= self.max_disk_bytes:
                break
            total -= path.stat().st_size
            path.unlink(missing_ok=True)
