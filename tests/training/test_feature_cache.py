from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tlbench.training.feature_cache import CachedFeatures, FeatureCache, content_key, module_digest


def _entry(n: int, value: float = 1.0) -> CachedFeatures:
    return CachedFeatures(torch.full((n, 4), value), seconds=1.5, flops=10.0, device="cpu")


def test_keys_depend_on_every_part() -> None:
    # any change in an ingredient changes the key; the same ingredients give the same key
    assert content_key(["a", b"b"]) == content_key(["a", b"b"])
    assert content_key(["a", "b"]) != content_key(["ab", ""])  # length-prefixed: no concatenation clash
    assert content_key(["a"]) != content_key(["b"])


def test_module_digest_tracks_weights() -> None:
    # the prefix's weights are part of the key: changing one value changes the digest
    layer = torch.nn.Linear(3, 2)
    before = module_digest(layer)
    with torch.no_grad():
        layer.weight[0, 0] += 1
    assert module_digest(layer) != before


def test_memory_layer_is_bounded_lru() -> None:
    # the least recently used entry goes first once the byte budget is exceeded
    one = _entry(10).nbytes
    cache = FeatureCache(max_bytes=2 * one)
    a, b, c = (content_key([s]) for s in "abc")
    cache.put(a, _entry(10))
    cache.put(b, _entry(10))
    assert cache.get(a) is not None  # a is now the most recent
    cache.put(c, _entry(10))
    assert cache.get(b) is None and cache.get(a) is not None and cache.get(c) is not None


def test_disk_layer_round_trips_and_is_bounded(tmp_path: Path) -> None:
    # entries survive a new process (a new cache object) and the directory stays under its budget
    one = _entry(100).nbytes
    cache = FeatureCache(max_bytes=10 * one, directory=tmp_path, max_disk_bytes=100 * one)
    keys = [content_key([str(i)]) for i in range(4)]
    cache.put(keys[0], _entry(100, 0.0))
    file_size = next(tmp_path.glob("*.pt")).stat().st_size
    cache.max_disk_bytes = int(2.5 * file_size)
    for i, key in enumerate(keys[1:], start=1):
        cache.put(key, _entry(100, float(i)))
    fresh = FeatureCache(max_bytes=10 * one, directory=tmp_path, max_disk_bytes=int(2.5 * file_size))
    assert len(list(tmp_path.glob("*.pt"))) == 2
    entry = fresh.get(keys[-1])
    assert entry is not None and float(entry.features[0, 0]) == 3.0 and entry.seconds == 1.5


@pytest.mark.parametrize("key", ["../../etc/passwd", "/tmp/x", "a" * 63, "A" * 64, "g" * 64])
def test_crafted_keys_cannot_escape_the_cache_directory(tmp_path: Path, key: str) -> None:
    # only sha256 hex digests name files: anything else is refused before touching the disk
    cache = FeatureCache(max_bytes=1 << 20, directory=tmp_path / "cache", max_disk_bytes=1 << 20)
    with pytest.raises(ValueError, match="sha256"):
        cache.put(key, _entry(1))
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_unreadable_cache_file_is_a_miss(tmp_path: Path) -> None:
    # a torn write or foreign file is ignored and removed, never crashes a trial
    key = content_key(["x"])
    (tmp_path / f"{key}.pt").write_bytes(b"not a tensor file")
    cache = FeatureCache(max_bytes=1 << 20, directory=tmp_path, max_disk_bytes=1 << 20)
    assert cache.get(key) is None and not (tmp_path / f"{key}.pt").exists()


@pytest.mark.parametrize("key", ["../../etc/passwd", "/etc/passwd", "../" + "a" * 64])
def test_crafted_keys_are_refused_on_reads_too(tmp_path: Path, key: str) -> None:
    # a lookup never builds a path from anything but a sha256 hex digest
    cache = FeatureCache(max_bytes=1 << 20, directory=tmp_path / "cache", max_disk_bytes=1 << 20)
    with pytest.raises(ValueError, match="sha256"):
        cache.get(key)


def test_planted_symlink_is_not_followed_out_of_the_cache(tmp_path: Path) -> None:
    # a link under a valid name, pointing outside the directory, is neither read nor written through
    directory = tmp_path / "cache"
    directory.mkdir()
    outside = tmp_path / "outside.pt"
    outside.write_bytes(b"precious")
    key = content_key(["x"])
    (directory / f"{key}.pt").symlink_to(outside)
    cache = FeatureCache(max_bytes=1 << 20, directory=directory, max_disk_bytes=1 << 20)
    with pytest.raises(ValueError, match="escapes"):
        cache.get(key)
    with pytest.raises(ValueError, match="escapes"):
        cache.put(key, _entry(1))
    assert outside.read_bytes() == b"precious"
