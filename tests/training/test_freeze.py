from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from tlbench.config import load_config
from tlbench.errors import ModelError
from tlbench.run import train
from tlbench.training.inputs import plan_inputs
from tlbench.training.network import (
    backbone_groups,
    bias_and_norm_names,
    build_model,
    fixed_frozen,
    frozen_modules,
    keep_frozen_in_eval,
    prepare,
    set_frozen,
    validate_depth,
)

CLASSES = ("a", "b", "c")


def test_lite0_groups_follow_timm(lite0_features: nn.Module) -> None:
    # timm's coarse group_matcher: stem then the 7 stages (the head conv joins the last) = 8 groups
    groups = backbone_groups(lite0_features)
    assert groups.depth == 8
    assert groups.labels[0] == "conv_stem" and groups.labels[1] == "blocks.0"
    assert sum(len(g) for g in groups.names) == len(list(lite0_features.parameters()))


def test_depth_out_of_range_reports_valid_range(lite0_features: nn.Module) -> None:
    # freeze_depth beyond the backbone's groups names the valid range for that backbone
    groups = backbone_groups(lite0_features)
    with pytest.raises(ModelError, match=r"valid 0\.\.8"):
        validate_depth(9, groups, backbone_name="tf_efficientnet_lite0")


def test_frozen_modules_are_put_in_eval(lite0_features: nn.Module) -> None:
    # after train(), the frozen stem and first stages (and their BatchNorms) are back in eval mode
    groups = backbone_groups(lite0_features)
    set_frozen(lite0_features, groups, 3)
    lite0_features.train()
    keep_frozen_in_eval(lite0_features)
    assert not lite0_features.bn1.training and not lite0_features.blocks[1].training
    assert lite0_features.blocks[2].training and lite0_features.bn2.training
    assert all(not p.requires_grad for m in frozen_modules(lite0_features) for p in m.parameters())


def _expected_trainable(strategy: str, depth: int | None = None) -> int:
    cfg = load_config(
        [f"strategy={strategy}", "backbone.weights=none"]
        if strategy == "scratch"
        else [f"strategy={strategy}"]
    )
    built = build_model(cfg, class_names=CLASSES)
    head = sum(p.numel() for p in built.network.head.parameters())
    if strategy in ("linear_probe", "lp_ft"):
        return head
    groups = built.groups
    named = dict(built.network.backbone.named_parameters())
    start = 0 if depth is None else depth
    return head + sum(named[n].numel() for group in groups.names[start:] for n in group)


@pytest.mark.parametrize(
    ("overrides", "strategy", "depth"),
    [
        (["strategy=linear_probe"], "linear_probe", None),  # only the head trains
        (["strategy=lp_ft"], "lp_ft", None),  # lp_ft starts as a linear probe
        (["strategy=full_finetune"], "full_finetune", 0),  # everything trains
        (["strategy=scratch"], "scratch", 0),  # everything trains, from random init
        (["strategy=partial", "strategy.freeze_depth=3"], "partial", 3),  # groups 3.. and the head
        (["strategy=partial", "strategy.freeze_depth=8"], "partial", 8),  # whole backbone frozen
    ],
)
def test_trainable_counts_per_strategy(overrides: list[str], strategy: str, depth: int | None) -> None:
    # trainable parameter counts follow the freeze plan
    built = build_model(load_config(overrides), class_names=CLASSES)
    trainable = sum(p.numel() for p in built.network.parameters() if p.requires_grad)
    assert trainable == _expected_trainable(strategy, depth)


def test_as_is_trains_nothing() -> None:
    # as_is keeps the ImageNet classifier and has no trainable parameter
    cfg = load_config(["strategy=as_is", "strategy.class_map={a: [ant], b: [bee], c: ['0']}"])
    built = build_model(cfg, class_names=CLASSES)
    assert built.phases == ()
    assert not any(p.requires_grad for p in built.network.parameters())
    assert built.freeze_depth == built.groups.depth == 8  # the kept classifier is not a feature group


def test_partial_out_of_range_from_config() -> None:
    # the config path reports the range too
    with pytest.raises(ModelError, match=r"valid 0\.\.8"):
        build_model(load_config(["strategy=partial", "strategy.freeze_depth=12"]), class_names=CLASSES)


@pytest.mark.parametrize("depth", [3, 8])
def test_training_leaves_frozen_weights_and_bn_statistics_unchanged(depth: int) -> None:
    # after a real fit, frozen parameters and frozen BatchNorm buffers are bit-identical; the rest moved
    cfg = load_config(
        [
            "data=synthetic",
            "strategy=partial",
            f"strategy.freeze_depth={depth}",
            "trainer=quick",
            "tracking=disabled",
        ]
    )
    initial = prepare(cfg).model  # the network the trial starts from (same seed: same weights)
    groups = initial.groups
    frozen_names = {n for g in groups.names[:depth] for n in g}
    frozen_prefixes = {n.rsplit(".", 1)[0] for n in frozen_names}
    before = {k: v.clone() for k, v in initial.network.backbone.state_dict().items()}
    head_before = [p.clone() for p in initial.network.head.parameters()]
    result = train(cfg, keep_model=True)
    assert result.model is not None, result.status  # the fit completed (its result may still collapse)
    trained = result.model.network
    after = trained.backbone.state_dict()
    for key, value in before.items():
        owner = key.rsplit(".", 1)[0]
        if owner in frozen_prefixes:
            assert torch.equal(value, after[key]), f"frozen {key} changed"
    trainable_changed = [
        k
        for k in before
        if k.rsplit(".", 1)[0] not in frozen_prefixes and not torch.equal(before[k], after[k])
    ]
    if depth < groups.depth:
        assert any("running_mean" in k for k in trainable_changed)  # unfrozen BN statistics did update
        assert any(k.endswith("weight") for k in trainable_changed)
    assert any(not torch.equal(a, b) for a, b in zip(head_before, trained.head.parameters(), strict=True))


def test_bitfit_trains_biases_norms_and_head(lite0_features: nn.Module) -> None:
    # lite0's convolutions have no bias: BitFit trains exactly its BatchNorm scales and shifts + the head
    built = build_model(load_config(["strategy=bitfit"]), class_names=CLASSES)
    network = built.network
    trainable = {n for n, p in network.named_parameters() if p.requires_grad}
    norms = {
        f"backbone.{prefix}.{n}"
        for prefix, m in network.backbone.named_modules()
        if isinstance(m, nn.BatchNorm2d)
        for n, _ in m.named_parameters(recurse=False)
    }
    assert trainable == norms | {"head.0.weight", "head.0.bias"}
    count = sum(p.numel() for p in network.parameters() if p.requires_grad)
    # 42,016 BatchNorm parameters (1.2% of lite0's 3.38 M) + a 3-class head
    assert count == 42_016 + 1280 * 3 + 3
    assert built.freeze_depth == 0 and built.groups.decay


def test_bitfit_on_a_vit_trains_every_bias_and_layernorm() -> None:
    # a transformer has biases in its linear layers: those train, weights and embeddings do not
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8, depth=2
    )
    names = bias_and_norm_names(vit)
    assert {"blocks.0.attn.qkv.bias", "blocks.1.mlp.fc2.bias", "patch_embed.proj.bias"} <= names
    assert {"blocks.0.norm1.weight", "norm.weight", "norm.bias"} <= names
    assert not names & {"blocks.0.attn.qkv.weight", "cls_token", "pos_embed", "patch_embed.proj.weight"}


def test_fixed_frozen_refuses_a_backbone_with_nothing_of_its_kind() -> None:
    # BitFit on a model without a bias or norm would be a linear probe: said in one line
    with pytest.raises(ModelError, match="toy has no bias or normalisation parameter to train"):
        fixed_frozen(nn.Sequential(nn.Conv2d(3, 4, 3, bias=False)), "bias_norm", backbone_name="toy")


@pytest.mark.parametrize("strategy", ["bitfit", "lora"])
def test_gradients_through_the_backbone_mean_no_feature_cache(strategy: str) -> None:
    # bitfit's first BatchNorm and lora's stem adapter train: nothing before them is a frozen prefix
    trial = prepare(load_config(["data=synthetic", f"strategy={strategy}", "tracking=disabled"]))
    plan = plan_inputs(
        trial.cfg,
        trial.model,
        trial.splits,
        device=trial.device,
        precision=trial.precision,
        channels_last=trial.channels_last,
    )
    assert plan.prefix is None
    assert plan.reason == "not cacheable: nothing frozen"


@pytest.mark.parametrize("strategy", ["bitfit", "lora"])
def test_a_real_fit_moves_only_what_the_strategy_trains(strategy: str) -> None:
    # after a real fit: bitfit changed BatchNorm scales and shifts but no conv weight and no BatchNorm
    # statistic (kept by default); lora changed its adapters and nothing pretrained (frozen norms: eval)
    small = ["data.samples_per_class=12", "data.resolution=16", "trainer.epochs=1", "trainer.batch_size=8"]
    cfg = load_config(
        ["data=synthetic", f"strategy={strategy}", "trainer=quick", "tracking=disabled", *small]
    )
    before = {k: v.clone() for k, v in prepare(cfg).model.network.backbone.state_dict().items()}
    result = train(cfg, keep_model=True)  # the same seed: it starts from the same weights
    assert result.model is not None, result.status  # the fit completed (its result may still collapse)
    after = result.model.network.backbone.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    convs = {k for k in before if k.endswith("weight") and before[k].ndim == 4 and "lora_" not in k}
    assert not changed & convs  # no pretrained convolution moved
    assert not any("running_" in k for k in changed)
    if strategy == "bitfit":
        assert any(k.endswith("bn1.weight") for k in changed) and any(k.endswith("bn2.bias") for k in changed)
    else:
        assert changed and all("lora_B" in k or "lora_A" in k for k in changed)
