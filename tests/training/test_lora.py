"""LoRA through peft: which layers get adapters, what trains, the load-time check, merging."""

from __future__ import annotations

import time

import pytest
import timm
import torch
from torch import nn

from tlbench.config import load_config
from tlbench.config.schema import LoraConfig
from tlbench.errors import ConfigError, ModelError
from tlbench.training.network import add_lora, build_model, check_lora, is_adapter, lora_targets, merge_lora

CLASSES = ("a", "b", "c")
LITE0 = "tf_efficientnet_lite0"


def _leaves(names: list[str]) -> set[str]:
    return {n.rsplit(".", 1)[-1] for n in names}


def test_lite0_targets_are_its_dense_convolutions(lite0_features: nn.Module) -> None:
    # stem, pointwise expansions/projections and the head conv get adapters; depthwise convs never do
    targets = lora_targets(lite0_features, LoraConfig(), backbone_name=LITE0)
    assert _leaves(targets) == {"conv_stem", "conv_pw", "conv_pwl", "conv_head"}
    dense = [n for n, m in lite0_features.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
    assert targets == dense  # every one of them, in model order


def test_named_targets_pick_a_subset(lite0_features: nn.Module) -> None:
    # a name matches a module's full name or its dotted suffix, as in peft
    targets = lora_targets(lite0_features, LoraConfig(targets=["conv_pwl", "conv_head"]), backbone_name=LITE0)
    assert _leaves(targets) == {"conv_pwl", "conv_head"}
    one = lora_targets(lite0_features, LoraConfig(targets=["blocks.6.0.conv_pw"]), backbone_name=LITE0)
    assert one == ["blocks.6.0.conv_pw"]


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        # depthwise only: says why peft cannot adapt it, and what can be
        (
            ["conv_dw"],
            "'conv_dw' matches no adaptable layer of tf_efficientnet_lite0 (only grouped/depthwise",
        ),
        # a typo: lists the names that exist
        (["conv_pww"], "its adaptable layers are named conv_stem, conv_pw, conv_pwl, conv_head"),
        # one bad name among good ones is still refused (it would silently adapt less than asked)
        (["conv_pw", "qkv"], "'qkv' matches no adaptable layer"),
    ],
)
def test_bad_targets_are_one_line(lite0_features: nn.Module, targets: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as error:
        lora_targets(lite0_features, LoraConfig(targets=targets), backbone_name=LITE0)
    assert "\n" not in str(error.value)


class _DepthwiseOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.norm = nn.BatchNorm2d(8)


def test_a_backbone_without_adaptable_layers_is_one_line() -> None:
    # nothing LoRA can adapt: refused before anything is built or trained
    with pytest.raises(ConfigError, match=r"^strategy=lora: dw_net has no layer LoRA can adapt") as error:
        lora_targets(_DepthwiseOnly(), LoraConfig(), backbone_name="dw_net")
    assert "\n" not in str(error.value)


def test_check_lora_is_cheap_and_matches_the_built_model() -> None:
    # the sweep's load-time check builds on the meta device, and names exactly the layers a trial adapts
    start = time.perf_counter()
    checked = check_lora(LITE0, LoraConfig(targets=["conv_pwl"]))
    assert time.perf_counter() - start < 10  # no weights, no peft import (seconds under load at most)
    built = build_model(
        load_config(["strategy=lora", "strategy.lora.targets=[conv_pwl]"]), class_names=CLASSES
    )
    names = [n for n, _ in built.network.backbone.named_parameters()]
    adapted = {n.split(".lora_A")[0] for n in names if ".lora_A" in n}
    assert set(checked) == adapted and len(checked) == 15  # one per inverted-residual block (not block 0)
    with pytest.raises(ConfigError, match="'conv_dw' matches no adaptable layer"):
        check_lora(LITE0, LoraConfig(targets=["conv_dw"]))
    with pytest.raises(ModelError, match="unknown backbone"):
        check_lora("efficientnet_lite9", LoraConfig())


def _expected_adapter_parameters(backbone: nn.Module, rank: int) -> int:
    """rank * (in * kernel) for A plus out * rank for B, over the dense convolutions."""
    total = 0
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d) and module.groups == 1:
            kernel = module.kernel_size[0] * module.kernel_size[1]
            total += rank * module.in_channels * kernel + module.out_channels * rank
    return total


@pytest.mark.parametrize("rank", [8, 2])
def test_only_adapters_and_head_train(lite0_features: nn.Module, rank: int) -> None:
    # every pretrained weight (BatchNorm included) is frozen; adapter and head parameter counts by hand
    built = build_model(load_config(["strategy=lora", f"strategy.lora.rank={rank}"]), class_names=CLASSES)
    network = built.network
    trainable = {n for n, p in network.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in network.named_parameters() if is_adapter(n) or n.startswith("head.")}
    head = 1280 * 3 + 3
    adapters = _expected_adapter_parameters(lite0_features, rank)
    assert sum(p.numel() for p in network.parameters() if p.requires_grad) == adapters + head
    # lite0 has 3.38 M backbone parameters; rank 8 adds 183 k, 5.4% of them
    assert adapters == {8: 182_744, 2: 45_686}[rank]
    assert built.freeze_depth == 0 and len(built.groups.fixed) == sum(1 for _ in lite0_features.parameters())


def test_adapters_start_at_the_pretrained_function() -> None:
    # B = 0 at initialisation: the adapted backbone computes exactly what the pretrained one does
    torch.manual_seed(0)
    plain = timm.create_model(LITE0, pretrained=False, num_classes=0).eval()
    adapted = timm.create_model(LITE0, pretrained=False, num_classes=0).eval()
    adapted.load_state_dict(plain.state_dict())
    add_lora(adapted, LoraConfig(), backbone_name=LITE0)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(plain(x), adapted(x))


def test_merge_folds_adapters_into_plain_timm_layers() -> None:
    # after merging, the network is the plain architecture (original parameter names, no peft class)
    # and computes the trained adapted function up to float rounding
    torch.manual_seed(0)
    backbone = timm.create_model(LITE0, pretrained=False, num_classes=0).eval()
    names = [n for n, _ in backbone.named_parameters()]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pretrained = backbone(x)
    add_lora(backbone, LoraConfig(rank=4, dropout=0.0), backbone_name=LITE0)
    with torch.no_grad():  # stand-in for training: non-zero B everywhere
        for name, param in backbone.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    with torch.no_grad():
        before = backbone(x)
    assert not torch.allclose(before, pretrained, rtol=1e-3, atol=1e-3)  # the adapters do change it
    assert merge_lora(backbone) == 33  # every adapted layer: stem, 16 + 15 pointwise, head
    assert [n for n, _ in backbone.named_parameters()] == names
    assert not any("peft" in type(m).__module__ for m in backbone.modules())
    with torch.no_grad():
        after = backbone(x)
    assert torch.allclose(before, after, rtol=1e-4, atol=1e-5)
    assert merge_lora(backbone) == 0  # nothing left to merge; a plain network is left alone


def test_bad_targets_fail_before_any_weight_is_fetched() -> None:
    # vit_tiny's weights come from the hub (offline here): the target check comes first, in one line
    cfg = load_config(["strategy=lora", "backbone=vit_tiny", "strategy.lora.targets=[conv_pw]"])
    with pytest.raises(ConfigError, match="its adaptable layers are named proj, qkv, fc1, fc2"):
        build_model(cfg, class_names=CLASSES)
