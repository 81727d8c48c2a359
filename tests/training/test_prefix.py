from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from tlbench.models.freeze import backbone_groups, set_frozen
from tlbench.training.prefix import SuffixNetwork, split_at_freeze_boundary


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
