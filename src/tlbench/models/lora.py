"""LoRA (Hu et al., 2021) on a timm backbone, through the ``peft`` library.

A targeted layer keeps its pretrained weight ``W`` frozen and adds ``(alpha / rank) * B A x``: for a
``Linear``, ``A`` is ``Linear(in, rank)`` and ``B`` ``Linear(rank, out)``; for a convolution, ``A`` is a
convolution ``in -> rank`` with the layer's own kernel, stride and padding and ``B`` a 1x1 convolution
``rank -> out``. ``B`` starts at zero, so training starts from the pretrained function. peft injects the
adapters in place (``inject_adapter_in_model``): the backbone stays the timm model, so its
``group_matcher``, ``num_features`` and ``pretrained_cfg`` keep working.

What can be adapted: ``nn.Linear`` and convolutions with ``groups=1``. peft adapts a grouped convolution
only when the rank is divisible by its groups (a depthwise 3x3 convolution of C channels would need a
rank of C or more: not low-rank) and cannot merge it, so grouped and depthwise convolutions are never
targeted. EfficientNet-Lite is mostly depthwise + pointwise convolutions: its adapters go on the stem,
the pointwise expansions and projections, and the head convolution (``conv_stem, conv_pw, conv_pwl,
conv_head``); its depthwise convolutions stay frozen without adapters.

``peft`` imports ``transformers`` (seconds): only a lora trial imports it, and only when it builds the
model. :func:`check_lora` (the sweep's load-time check) does not import it.
"""

from __future__ import annotations

from collections.abc import Sequence

import timm
import torch
from torch import nn

from tlbench.config.schema import LoraConfig
from tlbench.errors import ConfigError
from tlbench.models.backbone import check_model_name

ADAPTER_PREFIX = "lora_"  # peft names every LoRA parameter lora_A..., lora_B...: the ones that train


def _adaptable(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    return isinstance(module, conv) and module.groups == 1


def _grouped(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1


def _matches(name: str, target: str) -> bool:
    # peft's rule for a list of target names: the module's full name, or a dotted suffix of it
    return name == target or name.endswith("." + target)


def _leaf_names(names: Sequence[str]) -> list[str]:
    """Distinct last components, in order: the names a user writes in ``strategy.lora.targets``."""
    return list(dict.fromkeys(n.rsplit(".", 1)[-1] for n in names))


def lora_targets(backbone: nn.Module, cfg: LoraConfig, *, backbone_name: str) -> list[str]:
    """Full names of the layers that get adapters; :class:`ConfigError` (one line) when there are none.

    ``cfg.targets=None`` targets every adaptable layer; otherwise each listed name must match at least
    one adaptable layer (a typo, or a name that only matches depthwise convolutions, is refused).
    """
    modules = [(name, m) for name, m in backbone.named_modules() if name]
    adaptable = [name for name, m in modules if _adaptable(m)]
    if not adaptable:
        raise ConfigError(
            f"strategy=lora: {backbone_name} has no layer LoRA can adapt (nn.Linear, or a convolution "
            "with groups=1); choose another backbone or strategy"
        )
    if cfg.targets is None:
        return adaptable
    grouped = [name for name, m in modules if _grouped(m)]
    for target in cfg.targets:
        if any(_matches(name, target) for name in adaptable):
            continue
        why = (
            " (only grouped/depthwise convolutions, which peft adapts only with a rank divisible by "
            "their groups and cannot merge)"
            if any(_matches(name, target) for name in grouped)
            else ""
        )
        raise ConfigError(
            f"strategy.lora.targets: {target!r} matches no adaptable layer of {backbone_name}{why}; "
            f"its adaptable layers are named {', '.join(_leaf_names(adaptable))} (or null for all of them)"
        )
    return [name for name in adaptable if any(_matches(name, t) for t in cfg.targets)]


def check_lora(backbone_name: str, cfg: LoraConfig) -> list[str]:
    """The layers ``strategy=lora`` would adapt in ``backbone_name``, or :class:`ConfigError` (one line).

    Cheap enough for a sweep to call on every (backbone, lora config) at load: the timm model is built
    on the ``meta`` device (no weights, no memory) and peft is not imported.
    """
    check_model_name(backbone_name)
    with torch.device("meta"):
        backbone = timm.create_model(backbone_name, pretrained=False, num_classes=0)
    return lora_targets(backbone, cfg, backbone_name=backbone_name)


def add_lora(backbone: nn.Module, cfg: LoraConfig, *, backbone_name: str) -> list[str]:
    """Inject LoRA adapters into ``backbone`` in place (peft); returns the adapted layers' names.

    Which parameters train is decided by the freeze plan (:func:`tlbench.models.freeze.fixed_frozen`):
    the adapters and the head, nothing else.
    """
    targets = lora_targets(backbone, cfg, backbone_name=backbone_name)
    from peft import LoraConfig as PeftLoraConfig  # heavy (imports transformers): lora trials only
    from peft import inject_adapter_in_model

    config = PeftLoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, bias="none"
    )
    inject_adapter_in_model(config, backbone)
    return targets


def is_adapter(name: str) -> bool:
    """Whether parameter ``name`` belongs to a LoRA adapter (peft's own test: its prefix in the name)."""
    return ADAPTER_PREFIX in name


def merge_lora(network: nn.Module) -> int:
    """Fold every LoRA adapter into its layer (``W += alpha/rank * B A``) and drop the adapters.

    Afterwards ``network`` is the plain timm architecture again (no peft classes: loading it needs no
    peft) and computes the same function up to float rounding, at the base model's inference cost.
    Used for the delivered model; during a trial the adapters stay unmerged (they change every step).

    Returns:
        The number of layers merged (0 for a network without adapters; peft is then not imported).
    """
    if not any(is_adapter(name) for name, _ in network.named_parameters()):
        return 0
    from peft.tuners.lora import LoraLayer

    merged = 0
    for name, module in list(network.named_modules()):
        if not isinstance(module, LoraLayer):
            continue
        module.merge(safe_merge=True)  # refuses (ValueError) rather than writing non-finite weights
        parent, _, child = name.rpartition(".")
        setattr(network.get_submodule(parent) if parent else network, child, module.get_base_layer())
        merged += 1
    return merged
