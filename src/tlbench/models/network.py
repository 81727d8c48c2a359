"""Assemble backbone + head for a strategy, and the training phases the strategy implies.

The head is new, or (``as_is``) the pretrained classifier mapped onto the target classes.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import torch
from timm.data import ImageNetInfo, infer_imagenet_subset
from torch import nn

from tlbench.config.schema import HeadConfig, HeadType, ProbeSolver, RunConfig, WeightsSource
from tlbench.errors import ConfigError, ModelError
from tlbench.models.backbone import create_backbone
from tlbench.models.freeze import ParamGroups, backbone_groups, fixed_frozen, set_frozen, validate_depth
from tlbench.models.lora import add_lora, check_lora
from tlbench.optim.l2_sp import L2SP
from tlbench.strategies import FINETUNE_PHASE, PROBE_PHASE, Strategy, strategy

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


# -- the network ------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class TrainPhase:
    """A stretch of training with one freeze depth (lp_ft has two).

    ``solver="lbfgs"``: the head alone, fitted to convergence on frozen features
    (:mod:`tlbench.training.fit`), not in epochs; ``"sgd"``: ``epochs`` of the Lightning loop.
    """

    name: str
    freeze_depth: int
    epochs: int
    solver: str = "sgd"

    @property
    def in_loop(self) -> bool:
        """Trained by the Lightning loop (epochs of optimizer steps)."""
        return self.solver == "sgd"


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
    """The strategy (``spec``: :func:`tlbench.strategies.strategy` of ``cfg.strategy.name``) as a
    sequence of (freeze depth, epochs, solver) phases.

    ``linear_probe``: the head fitted to convergence (or ``epochs`` of SGD with probe.solver=sgd).
    ``lp_ft`` (Kumar et al., 2022): that probe, then every layer fine-tuned for ``epochs``.
    """
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


def build_model(cfg: RunConfig, *, class_names: Sequence[str]) -> BuiltModel:
    """Backbone with the strategy's weights, a new head (or the class-mapped classifier), frozen."""
    spec = strategy(cfg.strategy.name)
    backbone_cfg = cfg.backbone if spec.pretrained else replace(cfg.backbone, weights=WeightsSource.none)
    if spec.pretrained and backbone_cfg.weights == WeightsSource.none:
        raise ConfigError(
            f"strategy={cfg.strategy.name.value} reuses pretrained weights but backbone.weights=none; "
            "use strategy=scratch for random init, or pick a weight source (embedded, hub, file)"
        )
    if spec.trainable == "adapters":  # before any weight is fetched: a bad target is one line at once
        check_lora(cfg.backbone.name, cfg.strategy.lora)
    backbone = create_backbone(backbone_cfg, resolution=cfg.data.size, keep_classifier=not spec.trains)
    data_cfg = backbone.pretrained_cfg
    mean = tuple(float(v) for v in data_cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(float(v) for v in data_cfg.get("std", (0.229, 0.224, 0.225)))
    if spec.trains:
        head: nn.Module = create_head(
            cfg.strategy.head, in_features=backbone.num_features, num_classes=len(class_names)
        )
    else:
        indices = resolve_class_map(cfg.strategy.class_map, target_classes=class_names, model=backbone)
        head = ClassMapHead(indices)
    if spec.trainable == "adapters":
        add_lora(backbone, cfg.strategy.lora, backbone_name=cfg.backbone.name)
    network = TransferNetwork(backbone, head)
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
    return BuiltModel(
        network=network,
        groups=groups,
        phases=phases,
        weights=backbone_cfg.weights,
        mean=(mean[0], mean[1], mean[2]),
        std=(std[0], std[1], std[2]),
        # built before anything trains: w0 is the pretrained backbone (lp_ft's probe does not change it)
        penalty=L2SP(backbone, alpha=cfg.strategy.l2_sp) if cfg.strategy.l2_sp > 0 else None,
        keep_norm_stats=spec.keep_norm_stats
        if cfg.strategy.keep_norm_stats is None
        else cfg.strategy.keep_norm_stats,
    )
