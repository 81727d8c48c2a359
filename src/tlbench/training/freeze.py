"""Which parameters train: freeze planning over timm's ``group_matcher`` (depth k freezes the first k
groups, input side), BitFit's biases and norms, LoRA adapters (peft), and the L2-SP pull towards the
pretrained weights.

Groups come from timm (stem, then blocks or stages), so "freeze to depth k" works for every timm
architecture without special cases. Frozen modules are kept in eval mode, so BatchNorm running
statistics and dropout inside the frozen part behave like a fixed feature extractor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from timm.models import group_parameters
from torch import Tensor, nn

from tlbench.config.schema import LoraConfig, ProbeSolver, RunConfig
from tlbench.errors import ConfigError, ModelError
from tlbench.strategies import FINETUNE_PHASE, PROBE_PHASE, Strategy


@dataclass(frozen=True)
class ParamGroups:
    """Backbone parameter names per timm group, input side first; ``fixed``: frozen at every depth
    (bitfit, lora); ``decay``: the backbone's weights decay (not under L2-SP, whose pull replaces it)."""

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
    """The backbone parameters a strategy never trains, whatever the depth: ``all``: none; ``bias_norm``
    (bitfit): all but :func:`bias_and_norm_names`; ``adapters`` (lora): all but the LoRA adapters."""
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
    """Top-most sub-modules whose parameters are all frozen (stateless modules are skipped), in one
    linear pass: this runs every epoch, and asking each module for its subtree's parameters was
    quadratic, a measurable share of a short trial."""

    def scan(module: nn.Module) -> tuple[bool, bool, list[nn.Module]]:
        """(has parameters, has a trainable one, the top-most frozen modules of its subtree)."""
        own = list(module.parameters(recurse=False))
        has, trains = bool(own), any(p.requires_grad for p in own)
        found: list[nn.Module] = []
        for child in module.children():
            child_has, child_trains, child_found = scan(child)
            has, trains = has or child_has, trains or child_trains
            found += child_found
        return has, trains, [module] if has and not trains else found

    return scan(root)[2]


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


# LoRA (Hu et al., 2021) through ``peft``: a targeted layer keeps ``W`` frozen and adds
# ``(alpha / rank) * B A x`` (``B`` starts at zero: training starts from the pretrained function). peft
# injects the adapters in place, so the backbone stays the timm model (``group_matcher``,
# ``num_features`` and ``pretrained_cfg`` keep working). Only ``nn.Linear`` and convolutions with
# ``groups=1`` are targeted: peft adapts a grouped convolution only with a rank divisible by its groups
# (a depthwise one would need rank >= channels) and cannot merge it; EfficientNet-Lite's adapters go on
# ``conv_stem, conv_pw, conv_pwl, conv_head``. ``peft`` imports ``transformers`` (seconds): only a lora
# trial imports it, when it builds the model (not the sweep's load-time check).

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
    """Full names of the layers that get adapters (``cfg.targets=None``: every adaptable one; else each
    name must match one); :class:`ConfigError` (one line) when there are none or a name matches none."""
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


def add_lora(backbone: nn.Module, cfg: LoraConfig, *, backbone_name: str) -> list[str]:
    """Inject LoRA adapters into ``backbone`` in place (peft); returns the adapted layers' names."""
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
    """Fold every LoRA adapter into its layer (``W += alpha/rank * B A``), drop the adapters, and return
    how many layers merged (0: no adapters, peft not imported). Afterwards ``network`` is the plain timm
    architecture again (loading it needs no peft), the same function up to float rounding: the
    delivered model's form (during a trial the adapters stay unmerged)."""
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


# L2-SP (Li et al., 2018): the objective becomes ``loss + alpha/2 * ||w - w0||^2`` over the backbone's
# trainable parameters (``w0``: the pretrained weights). As in the paper, the backbone then gets no plain
# weight decay (:class:`ParamGroups` ``decay``: it would pull against ``w0``); the head keeps
# ``optimizer.weight_decay``. Its cost is elementwise (lite0: ~15 MFLOPs a step against ~3 GFLOPs for a
# batch of 64 at 32 px), which ``cost/train_flops`` does not count.


class L2SP:
    """``penalty()`` = ``alpha/2 * sum ||w - w0||^2`` over ``backbone``'s parameters that require grad
    (frozen ones equal ``w0``). ``w0`` is copied at construction, and follows each parameter's device
    and dtype on first use."""

    def __init__(self, backbone: nn.Module, *, alpha: float) -> None:
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha=}")
        self.alpha = alpha
        self._pairs = [(p, p.detach().clone()) for p in backbone.parameters()]

    def __call__(self) -> Tensor:
        total: Tensor | None = None
        for index, (param, start) in enumerate(self._pairs):
            if not param.requires_grad:
                continue
            if start.device != param.device or start.dtype != param.dtype:
                start = start.to(device=param.device, dtype=param.dtype)
                self._pairs[index] = (param, start)
            term = (param - start).pow(2).sum()
            total = term if total is None else total + term
        if total is None:
            device = self._pairs[0][0].device if self._pairs else None
            return torch.zeros((), device=device)
        return 0.5 * self.alpha * total


# -- phases: what trains when ------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainPhase:
    """A stretch of training with one freeze depth (lp_ft has two); ``solver="lbfgs"``: the head alone,
    fitted to convergence on frozen features, not in epochs; ``"sgd"``: ``epochs`` of the Lightning loop."""

    name: str
    freeze_depth: int
    epochs: int
    solver: str = "sgd"

    @property
    def in_loop(self) -> bool:
        return self.solver == "sgd"


def _probe_phase(cfg: RunConfig, depth: int) -> TrainPhase:
    if cfg.strategy.probe.solver == ProbeSolver.sgd:
        return TrainPhase(PROBE_PHASE, depth, cfg.trainer.epochs)
    if cfg.data.augment:
        raise ConfigError(
            f"strategy={cfg.strategy.name.value} fits its probe by L-BFGS on fixed features, which "
            "data.augment=true would change every epoch: set strategy.probe.solver=sgd, or data.augment=false"
        )
    return TrainPhase(PROBE_PHASE, depth, 0, solver="lbfgs")


def plan_phases(cfg: RunConfig, spec: Strategy, groups: ParamGroups) -> tuple[TrainPhase, ...]:
    """The strategy as (freeze depth, epochs, solver) phases; ``lp_ft`` (Kumar et al., 2022): the probe,
    then every layer fine-tuned for ``epochs``."""
    epochs = cfg.trainer.epochs
    if not spec.trains:
        return ()
    if spec.probe_first:
        probe = _probe_phase(cfg, groups.depth)
        return (probe, TrainPhase(FINETUNE_PHASE, 0, epochs)) if spec.then_finetune else (probe,)
    depth = {"none": 0, "all": groups.depth}.get(spec.freeze)
    if depth is None:  # "config": strategy.freeze_depth
        depth = cfg.strategy.freeze_depth if cfg.strategy.freeze_depth is not None else 0
        validate_depth(depth, groups, backbone_name=cfg.backbone.name)
    return (TrainPhase(spec.name, depth, epochs),)


def plan_training(
    network: nn.Module, cfg: RunConfig, spec: Strategy
) -> tuple[ParamGroups, tuple[TrainPhase, ...], L2SP | None]:
    """What trains, phase by phase, in ``network`` (a backbone and a head): LoRA adapters injected
    (``lora``), the backbone's groups, the parameters the strategy never trains, the phases, the first
    phase's freeze applied (nothing trains for ``as_is``), and the L2-SP penalty (``strategy.l2_sp > 0``).
    """
    backbone: nn.Module = network.backbone  # type: ignore[assignment]
    if spec.trainable == "adapters":
        add_lora(backbone, cfg.strategy.lora, backbone_name=cfg.backbone.name)
    groups = replace(
        backbone_groups(backbone, coarse=cfg.backbone.coarse_groups),
        fixed=fixed_frozen(backbone, spec.trainable, backbone_name=cfg.backbone.name),
        decay=cfg.strategy.l2_sp == 0,
    )
    phases = plan_phases(cfg, spec, groups)
    set_frozen(backbone, groups, phases[0].freeze_depth if phases else groups.depth)
    if not spec.trains:
        for param in network.parameters():
            param.requires_grad_(False)
    # built before anything trains: w0 is the pretrained backbone (lp_ft's probe does not change it)
    penalty = L2SP(backbone, alpha=cfg.strategy.l2_sp) if cfg.strategy.l2_sp > 0 else None
    return groups, phases, penalty
