"""Freeze planning over timm's ``group_matcher``: depth k freezes the first k groups (input side).

Groups come from timm (stem, then blocks or stages), so "freeze to depth k" works for every timm
architecture without special cases. Frozen modules are kept in eval mode, so BatchNorm running
statistics and dropout inside the frozen part behave like a fixed feature extractor.
"""

from __future__ import annotations

from dataclasses import dataclass

from timm.models import group_parameters
from torch import nn

from tlbench.errors import ModelError


@dataclass(frozen=True)
class ParamGroups:
    """Backbone parameter names per timm group, input side first."""

    names: tuple[tuple[str, ...], ...]
    labels: tuple[str, ...]  # a readable label per group, e.g. "conv_stem" or "blocks.3"

    @property
    def depth(self) -> int:
        return len(self.names)


def backbone_groups(backbone: nn.Module, *, coarse: bool = True) -> ParamGroups:
    """The backbone's parameters grouped by its ``group_matcher`` (all parameters covered)."""
    matcher = getattr(backbone, "group_matcher", None)
    if matcher is None:
        raise ModelError(f"{type(backbone).__name__} has no group_matcher: freeze_depth needs a timm model")
    grouped = group_parameters(backbone, matcher(coarse=coarse))
    names = tuple(tuple(grouped[g]) for g in sorted(grouped))
    all_names = {n for n, _ in backbone.named_parameters()}
    covered = {n for group in names for n in group}
    if covered != all_names:
        raise ModelError(f"group_matcher left parameters ungrouped: {sorted(all_names - covered)[:4]}")
    labels = tuple(_label(group) for group in names)
    return ParamGroups(names=names, labels=labels)


def _label(group: tuple[str, ...]) -> str:
    first = group[0].rsplit(".", 1)[0]
    parts = first.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and parts[1].isdigit() else parts[0]


def validate_depth(depth: int, groups: ParamGroups, *, backbone_name: str) -> None:
    if not 0 <= depth <= groups.depth:
        raise ModelError(
            f"strategy.freeze_depth={depth} is out of range for {backbone_name}: valid 0..{groups.depth} "
            f"(0 = nothing frozen, {groups.depth} = whole backbone frozen; "
            f"groups: {', '.join(groups.labels)})"
        )


def set_frozen(backbone: nn.Module, groups: ParamGroups, depth: int) -> None:
    """Freeze the first ``depth`` groups and unfreeze the rest."""
    frozen = {n for group in groups.names[:depth] for n in group}
    for name, param in backbone.named_parameters():
        param.requires_grad_(name not in frozen)


def frozen_modules(root: nn.Module) -> list[nn.Module]:
    """Top-most sub-modules whose parameters are all frozen (stateless modules are skipped)."""
    found: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            found.append(module)
            return
        for child in module.children():
            visit(child)

    visit(root)
    return found


def keep_frozen_in_eval(root: nn.Module) -> None:
    """Put frozen sub-modules in eval mode (call after every ``root.train()``)."""
    for module in frozen_modules(root):
        module.eval()


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, total
