from __future__ import annotations

import pytest
import torch
from torch import nn

from tlbench.config import load_config
from tlbench.errors import ModelError
from tlbench.models.freeze import (
    backbone_groups,
    frozen_modules,
    keep_frozen_in_eval,
    set_frozen,
    validate_depth,
)
from tlbench.models.network import build_model
from tlbench.training.fit import Fit
from tlbench.training.inputs import trial_inputs
from tlbench.training.prepare import prepare

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
    prepared = prepare(cfg)
    backbone = prepared.model.network.backbone
    groups = prepared.model.groups
    frozen_names = {n for g in groups.names[:depth] for n in g}
    frozen_prefixes = {n.rsplit(".", 1)[0] for n in frozen_names}
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    head_before = [p.clone() for p in prepared.model.network.head.parameters()]
    fitting = Fit(prepared)
    with fitting:
        fitting.run(trial_inputs(prepared))
    outcome = fitting.outcome()
    assert outcome.status == "completed"
    after = backbone.state_dict()
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
    assert any(
        not torch.equal(a, b)
        for a, b in zip(head_before, prepared.model.network.head.parameters(), strict=True)
    )
