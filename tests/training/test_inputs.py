"""A trial's inputs: the frozen prefix split off the backbone, and the feature cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from tlbench.training.inputs import (
    CachedFeatures,
    FeatureCache,
    SuffixNetwork,
    content_key,
    module_digest,
    split_at_freeze_boundary,
)
from tlbench.training.network import backbone_groups, set_frozen


def _frozen(name: str, depth: int) -> nn.Module:
    kwargs = {"img_size": 32} if name.startswith("vit") else {}
    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs).eval()
    groups = backbone_groups(model)
    set_frozen(model, groups, depth if depth >= 0 else groups.depth)
    return model


@pytest.mark.parametrize(
    ("name", "depth"),
    [
        ("tf_efficientnet_lite0", 1),
        ("tf_efficientnet_lite0", 4),
        ("resnet18", 2),
        ("mobilenetv3_small_100", 3),
    ],
)
def test_chain_split_reproduces_the_backbone(name: str, depth: int) -> None:
    # prefix then suffix equals the backbone's own forward, and the prefix holds only frozen weights
    model = _frozen(name, depth)
    x = torch.randn(2, 3, 32, 32)
    split = split_at_freeze_boundary(model, x)
    assert split is not None and 0 < split.boundary < split.units
    assert not any(p.requires_grad for p in split.prefix.parameters())
    assert any(p.requires_grad for p in split.suffix.parameters())
    with torch.no_grad():
        torch.testing.assert_close(split.suffix(split.prefix(x)), model(x), rtol=1e-4, atol=1e-5)


def test_fully_frozen_backbone_is_one_prefix_for_any_architecture() -> None:
    # a linear probe caches the pooled features of any timm model, ViTs included
    model = _frozen("vit_tiny_patch16_224", -1)
    split = split_at_freeze_boundary(model, torch.randn(2, 3, 32, 32))
    assert split is not None and split.prefix is model and len(split.suffix) == 0


def test_non_chain_models_are_not_split() -> None:
    # a ViT with its first blocks frozen does not compose as a chain: no partial caching
    assert split_at_freeze_boundary(_frozen("vit_tiny_patch16_224", 3), torch.randn(2, 3, 32, 32)) is None


def test_nothing_frozen_means_no_split() -> None:
    # full fine-tuning has no frozen prefix
    assert split_at_freeze_boundary(_frozen("resnet18", 0), torch.randn(2, 3, 32, 32)) is None


def test_suffix_network_trains_only_on_activations() -> None:
    # SuffixNetwork = head(suffix(a)), with the whole network still registered for freezing and LRs
    backbone = _frozen("tf_efficientnet_lite0", 4)
    head = nn.Linear(backbone.num_features, 3)
    network = nn.Module()
    network.backbone, network.head = backbone, head
    split = split_at_freeze_boundary(backbone, torch.randn(2, 3, 32, 32))
    assert split is not None
    suffix_net = SuffixNetwork(network, split.suffix)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(suffix_net(split.prefix(x)), head(backbone(x)), rtol=1e-4, atol=1e-5)
    assert {id(p) for p in suffix_net.parameters()} == {id(p) for p in network.parameters()}


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
