"""Optimizer parameter groups: head LR, backbone LR multiplier, layer-wise decay, no decay on 1-D params."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tlbench.config.schema import OptimizerConfig, OptimizerName
from tlbench.models.freeze import ParamGroups


def layer_lr_multipliers(depth: int, cfg: OptimizerConfig) -> list[float]:
    """LR multiplier of each backbone group: ``backbone_lr_mult * layer_decay ** (depth - i)``.

    The head counts as layer ``depth`` (multiplier 1), so the group nearest the input learns slowest.
    """
    return [cfg.backbone_lr_mult * cfg.layer_decay ** (depth - i) for i in range(depth)]


# Not timm.optim.param_groups_layer_decay: it groups by the fine group_matcher (coarse=False) where
# freeze_depth and these multipliers share the configured groups, skips frozen parameters (lp_ft's
# fine-tune needs them in the optimizer from the start; timm #2691), and leaves the head to lr_scale.
def build_param_groups(
    backbone: nn.Module, head: nn.Module, groups: ParamGroups, cfg: OptimizerConfig, *, include_frozen: bool
) -> list[dict[str, Any]]:
    """Param groups for ``torch.optim``; frozen parameters only when a later phase unfreezes them.

    Weights (>= 2-D) decay at ``cfg.weight_decay``, except the backbone's when ``groups.decay`` is false
    (L2-SP replaces their decay); biases and normalisation parameters never decay.
    """
    named = dict(backbone.named_parameters())
    multipliers = layer_lr_multipliers(groups.depth, cfg)
    out: list[dict[str, Any]] = []
    sections: list[tuple[str, list[tuple[str, nn.Parameter]], float]] = [
        (f"backbone.{label}", [(n, named[n]) for n in names], mult)
        for label, names, mult in zip(groups.labels, groups.names, multipliers, strict=True)
    ]
    sections.append(("head", list(head.named_parameters()), 1.0))
    for label, params, mult in sections:
        chosen = [(n, p) for n, p in params if include_frozen or p.requires_grad]
        decay = [p for n, p in chosen if p.ndim > 1]
        no_decay = [p for n, p in chosen if p.ndim <= 1]
        weight_decay = cfg.weight_decay if groups.decay or label == "head" else 0.0
        for plist, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if plist:
                out.append({"params": plist, "lr": cfg.lr * mult, "weight_decay": wd, "name": label})
    return out


def create_optimizer(param_groups: list[dict[str, Any]], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    if not param_groups:
        raise ValueError("no trainable parameters to optimise")
    if cfg.name == OptimizerName.sgd:
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(param_groups, lr=cfg.lr)
