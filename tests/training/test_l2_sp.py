"""L2-SP: the penalty's value and gradient, what it covers, its place in the loss, and weight decay."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tlbench.config import load_config
from tlbench.config.schema import OptimizerConfig, ScheduleConfig
from tlbench.training.fit import TransferModule, build_param_groups
from tlbench.training.network import L2SP, ParamGroups, TrainPhase, backbone_groups, build_model, set_frozen


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_penalty_is_zero_at_the_start_and_half_alpha_squared_distance_after() -> None:
    net = _net()
    penalty = L2SP(net, alpha=0.5)
    # at w0 the pull is zero
    assert penalty().item() == 0.0
    with torch.no_grad():
        net[0].weight += 0.1  # 12 entries moved by 0.1
        net[2].bias -= 2.0  # 2 entries moved by 2
    # alpha/2 * (12 * 0.01 + 2 * 4) = 0.25 * 8.12
    assert penalty().item() == pytest.approx(0.25 * 8.12)


def test_gradient_pulls_each_weight_towards_its_start() -> None:
    # d/dw alpha/2 ||w - w0||^2 = alpha (w - w0)
    net = _net()
    penalty = L2SP(net, alpha=0.1)
    with torch.no_grad():
        net[0].weight += 0.3
    penalty().backward()
    assert net[0].weight.grad is not None
    assert torch.allclose(net[0].weight.grad, torch.full_like(net[0].weight, 0.03))
    assert net[2].weight.grad is not None and not net[2].weight.grad.any()  # unmoved: no pull


def test_frozen_parameters_are_skipped() -> None:
    # a frozen parameter equals w0 during training; even if moved by hand it is not in the sum
    net = _net()
    penalty = L2SP(net, alpha=1.0)
    net[0].weight.requires_grad_(False)
    with torch.no_grad():
        net[0].weight += 1.0
        net[0].bias += 1.0  # 4 entries, still trainable
    assert penalty().item() == pytest.approx(0.5 * 4)


def test_reference_follows_the_parameter_dtype() -> None:
    # w0 is converted once to where the parameter lives (here a dtype change; a device move works alike)
    net = _net()
    penalty = L2SP(net, alpha=1.0)
    net.double()
    assert penalty().dtype == torch.float64


def test_alpha_must_be_positive() -> None:
    with pytest.raises(ValueError, match="alpha"):
        L2SP(_net(), alpha=0.0)


def test_build_model_gives_the_penalty_only_when_asked() -> None:
    # strategy.l2_sp > 0: a penalty over the backbone (w0 = the pretrained weights), decay off for it
    plain = build_model(load_config(["strategy=full_finetune"]), class_names=("a", "b"))
    assert plain.penalty is None and plain.groups.decay
    built = build_model(load_config(["strategy=full_finetune", "strategy.l2_sp=0.1"]), class_names=("a", "b"))
    assert built.penalty is not None and not built.groups.decay
    assert built.penalty().item() == 0.0
    with torch.no_grad():
        built.network.backbone.conv_stem.weight += 0.01  # 864 entries
        built.network.head[0].weight += 5.0  # the head is not pulled towards anything
    assert built.penalty().item() == pytest.approx(0.05 * 864 * 1e-4, rel=1e-3)


def test_backbone_weights_do_not_decay_under_l2_sp(tiny_backbone: nn.Module) -> None:
    # L2-SP replaces the backbone's weight decay (Li et al.); the head keeps optimizer.weight_decay
    head = nn.Linear(1280, 3)
    cfg = OptimizerConfig(weight_decay=0.01)
    groups = backbone_groups(tiny_backbone)
    for decay, backbone_wd in ((True, {0.01, 0.0}), (False, {0.0})):
        plan = replace(groups, decay=decay)
        pg = build_param_groups(tiny_backbone, head, plan, cfg, include_frozen=False)
        assert {g["weight_decay"] for g in pg if g["name"] != "head"} == backbone_wd
        assert {g["weight_decay"] for g in pg if g["name"] == "head"} == {0.01, 0.0}  # weight, bias


def test_the_module_minimises_loss_plus_penalty_and_logs_the_loss() -> None:
    # TransferModule's hook: the step returns cross-entropy + penalty; train/loss stays the cross-entropy
    torch.manual_seed(0)
    backbone, head = nn.Sequential(nn.Linear(4, 4)), nn.Linear(4, 2)
    network = nn.Sequential(backbone, head)
    groups = ParamGroups(names=(("0.weight", "0.bias"),), labels=("0",))
    set_frozen(backbone, groups, 0)
    module = TransferModule(
        network, backbone=backbone, head=head, groups=groups, phases=[TrainPhase("full_finetune", 0, 1)],
        optimizer_cfg=OptimizerConfig(), schedule_cfg=ScheduleConfig(), steps_per_epoch=1,
        check_every_step=True, num_classes=2, penalty=lambda: torch.tensor(0.75),
    )  # fmt: skip
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 0, 1, 1])
    returned = module.training_step((x, y), 0)
    loss = F.cross_entropy(network(x), y)
    assert returned.item() == pytest.approx(loss.item() + 0.75)
    assert module._epoch_loss.item() / module._epoch_seen == pytest.approx(loss.item())
