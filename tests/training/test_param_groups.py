from __future__ import annotations

import pytest
from torch import nn

from tlbench.config.schema import OptimizerConfig, OptimizerName
from tlbench.training.fit import build_param_groups, create_optimizer, layer_lr_multipliers
from tlbench.training.network import backbone_groups, set_frozen


def test_layer_decay_multipliers() -> None:
    # group i of n gets backbone_lr_mult * decay ** (n - i): the input side learns slowest
    cfg = OptimizerConfig(backbone_lr_mult=0.5, layer_decay=0.5)
    assert layer_lr_multipliers(3, cfg) == pytest.approx([0.5 * 0.125, 0.5 * 0.25, 0.5 * 0.5])


def test_groups_carry_lrs_and_skip_frozen(tiny_backbone: nn.Module) -> None:
    # head at lr, backbone at lr*mult, frozen params absent, no weight decay on 1-D params
    groups = backbone_groups(tiny_backbone)
    set_frozen(tiny_backbone, groups, 1)
    head = nn.Linear(tiny_backbone.num_features, 3)
    cfg = OptimizerConfig(lr=0.1, backbone_lr_mult=0.1, weight_decay=0.01)
    pg = build_param_groups(tiny_backbone, head, groups, cfg, include_frozen=False)
    ids = {id(p) for g in pg for p in g["params"]}
    frozen = [p for p in tiny_backbone.parameters() if not p.requires_grad]
    assert frozen and not any(id(p) in ids for p in frozen)
    head_groups = [g for g in pg if g["name"] == "head"]
    assert {g["lr"] for g in head_groups} == {0.1}
    assert all(g["lr"] == pytest.approx(0.01) for g in pg if g["name"] != "head")
    assert all(g["weight_decay"] == 0.0 for g in pg if all(p.ndim <= 1 for p in g["params"]))
    # include_frozen (lp_ft) covers every parameter exactly once
    all_pg = build_param_groups(tiny_backbone, head, groups, cfg, include_frozen=True)
    n_all = sum(len(g["params"]) for g in all_pg)
    assert n_all == len(list(tiny_backbone.parameters())) + len(list(head.parameters()))


@pytest.mark.parametrize(("name", "cls"), [(OptimizerName.sgd, "SGD"), (OptimizerName.adamw, "AdamW")])
def test_create_optimizer(name: OptimizerName, cls: str) -> None:
    # both optimizers build from param groups
    layer = nn.Linear(2, 2)
    opt = create_optimizer([{"params": list(layer.parameters()), "lr": 0.1}], OptimizerConfig(name=name))
    assert type(opt).__name__ == cls


def test_create_optimizer_refuses_nothing_to_train() -> None:
    # an empty parameter list is an explicit error
    with pytest.raises(ValueError, match="no trainable"):
        create_optimizer([], OptimizerConfig())
