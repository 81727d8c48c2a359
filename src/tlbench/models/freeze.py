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
from tlbench.models.lora import is_adapter


@dataclass(frozen=True)
class ParamGroups:
    """Backbone parameter names per timm group, input side first, and what the strategy never trains.

    ``fixed``: parameters frozen at every depth (bitfit: all but biases and normalisation parameters;
    lora: all but the adapters). ``decay``: whether the backbone's weights get ``optimizer.weight_decay``
    (not under L2-SP, whose pull towards the pretrained weights replaces it, as in Li et al., 2018).
    """

    names: tuple[tuple[str, ...], ...]
    labels: tuple[str, ...]  # a readable label per group, e.g. "conv_stem" or "blocks.3"
    fixed: frozenset[str] = frozenset()
    decay: bool = True

    @property
    def depth(self) -> int:
        return len(self.names)


def backbone_groups(backbone: nn.Module, *, coarse: bool = True) -> ParamGroups:
    """The backbone's parameters grouped by its ``group_matcher`` (all parameters covered)."""
    matcher = getattr(backbone, "group_matcher", None)
    if matcher is None:
        raise ModelError(f"{type(backbone).__name__} has no group_matcher: freeze_depth needs a timm model")
    # A classifier still attached (as_is) is not part of the feature extractor's depth.
    get_classifier = getattr(backbone, "get_classifier", None)
    classifier = get_classifier() if callable(get_classifier) else None
    head_ids = {id(p) for p in classifier.parameters()} if isinstance(classifier, nn.Module) else set()
    head_names = {n for n, p in backbone.named_parameters() if id(p) in head_ids}
    grouped = group_parameters(backbone, matcher(coarse=coarse))
    kept = (tuple(n for n in grouped[g] if n not in head_names) for g in sorted(grouped))
    names = tuple(group for group in kept if group)
    all_names = {n for n, _ in backbone.named_parameters()} - head_names
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


# Normalisation layers whose own parameters (scale and shift) BitFit trains; timm's norm layers subclass
# these, except a few (RmsNorm, ...) that the class-name test below catches.
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def _is_norm(module: nn.Module) -> bool:
    name = type(module).__name__.lower()
    return isinstance(module, _NORMS) or name.endswith(("norm", "norm2d", "normact2d"))


def bias_and_norm_names(backbone: nn.Module) -> set[str]:
    """BitFit's trainable set (Ben Zaken et al., 2022): every bias, and the normalisation layers' affine
    parameters (in a BatchNorm CNN the convolutions have no bias: BitFit there is the norms' scale and
    shift, which the BitFit paper's LayerNorm models train as biases of their own)."""
    names = {name for name, _ in backbone.named_parameters() if name.rsplit(".", 1)[-1] == "bias"}
    for prefix, module in backbone.named_modules():
        if _is_norm(module):
            names |= {f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters(recurse=False)}
    return names


def fixed_frozen(backbone: nn.Module, trainable: str, *, backbone_name: str) -> frozenset[str]:
    """The backbone parameters a strategy never trains (``Strategy.trainable``), whatever the depth.

    ``all``: none; ``bias_norm`` (bitfit): all but :func:`bias_and_norm_names`; ``adapters`` (lora):
    all but the LoRA adapters injected by :func:`tlbench.models.lora.add_lora`.
    """
    if trainable == "all":
        return frozenset()
    if trainable == "bias_norm":
        keep = bias_and_norm_names(backbone)
    elif trainable == "adapters":
        keep = {name for name, _ in backbone.named_parameters() if is_adapter(name)}
    else:
        raise ValueError(f"unknown trainable kind {trainable!r}")
    if not keep:
        what = "bias or normalisation parameter" if trainable == "bias_norm" else "LoRA adapter"
        raise ModelError(f"{backbone_name} has no {what} to train: the strategy would be a linear probe")
    return frozenset(name for name, _ in backbone.named_parameters() if name not in keep)


def set_frozen(backbone: nn.Module, groups: ParamGroups, depth: int) -> None:
    """Freeze the first ``depth`` groups and every ``groups.fixed`` parameter; unfreeze the rest."""
    frozen = {n for group in groups.names[:depth] for n in group} | groups.fixed
    for name, param in backbone.named_parameters():
        param.requires_grad_(name not in frozen)


def frozen_modules(root: nn.Module) -> list[nn.Module]:
    """Top-most sub-modules whose parameters are all frozen (stateless modules are skipped).

    One bottom-up pass records, per module, whether its subtree holds parameters and whether any
    of them trains; a top-down pass then collects the top-most all-frozen subtrees. Linear in the
    number of modules: this runs at every switch to training mode (each epoch), and asking every
    module for all of its subtree's parameters was quadratic, a measurable share of a short trial.
    """
    state: dict[int, tuple[bool, bool]] = {}  # id(module) -> (has parameters, has a trainable one)

    def scan(module: nn.Module) -> tuple[bool, bool]:
        own = list(module.parameters(recurse=False))
        has, trains = bool(own), any(p.requires_grad for p in own)
        for child in module.children():
            child_has, child_trains = scan(child)
            has, trains = has or child_has, trains or child_trains
        state[id(module)] = (has, trains)
        return has, trains

    scan(root)
    found: list[nn.Module] = []

    def collect(module: nn.Module) -> None:
        has, trains = state[id(module)]
        if has and not trains:
            found.append(module)
            return
        for child in module.children():
            collect(child)

    collect(root)
    return found


def keep_frozen_in_eval(root: nn.Module) -> None:
    """Put frozen sub-modules in eval mode (call after every ``root.train()``)."""
    for module in frozen_modules(root):
        module.eval()


def keep_norm_statistics(root: nn.Module) -> None:
    """BatchNorm layers in eval mode: they normalise with their running statistics (and keep them),
    while their affine parameters still train. LP-FT's fine-tune phase starts from a probe fitted on
    features computed with those statistics; batch statistics would shift every feature at step 1."""
    for module in root.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, total
