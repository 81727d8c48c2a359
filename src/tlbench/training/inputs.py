"""Step 2 of a trial: what the fit consumes, images through the whole network or cached frozen-prefix
activations.

A linear probe (and ``partial`` without augmentation) computes the frozen prefix once per split and
trains only the suffix + head on the stored activations; ``lp_ft`` fits its probe on the features and
fine-tunes on the images. The extraction runs inside the timed fit, so its cost is counted once, by
the trial that computed it; a trial that reuses it records that (``feature_cache=hit``) and what it
would have cost alone.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from tlbench.config.schema import RunConfig, TrainerConfig
from tlbench.data import BatchTransform, DataSplits, InMemoryLoader
from tlbench.data.load import tensor_digest
from tlbench.training.device import DeviceInfo, FitMeter, autocast_context
from tlbench.training.flops import forward_flops_per_sample
from tlbench.training.network import BuiltModel

log = logging.getLogger(__name__)


# -- the frozen prefix and the trainable suffix ------------------------------------------------------
# Most timm CNNs (EfficientNet, MobileNet, ResNet, RegNet, ...) compute ``forward(x)`` as their children
# in registration order, ``nn.Sequential`` stages of blocks. That chain is flattened and *verified
# numerically* to reproduce ``backbone(x)``; a model where it does not (ViTs add tokens and position
# embeddings) is not split, and trains the ordinary way.


@dataclass(frozen=True)
class PrefixSplit:
    """``backbone(x) == suffix(prefix(x))``, with every parameter of ``prefix`` frozen."""

    prefix: nn.Module
    suffix: nn.Sequential
    boundary: int  # chain units in the prefix (a cache-key ingredient); -1 = the whole backbone
    units: int


def _chain(module: nn.Module) -> list[nn.Module]:
    """Children in order, descending into ``nn.Sequential`` children so stages split into blocks."""
    out: list[nn.Module] = []
    for child in module.children():
        if isinstance(child, nn.Sequential) and len(child) > 0:
            out.extend(_chain(child))
        else:
            out.append(child)
    return out


def _has_trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def split_at_freeze_boundary(backbone: nn.Module, probe: torch.Tensor) -> PrefixSplit | None:
    """The split, or None when nothing is frozen or the backbone is not a chain that reproduces itself
    on ``probe`` (a small normalized batch on its device), checked in eval mode as frozen units run."""
    if not _has_trainable(backbone):  # linear probe: the prefix is the whole backbone, any architecture
        return PrefixSplit(prefix=backbone, suffix=nn.Sequential(), boundary=-1, units=-1)
    units = _chain(backbone)
    boundary = next((i for i, unit in enumerate(units) if _has_trainable(unit)), len(units))
    if boundary == 0:
        return None
    prefix, suffix = nn.Sequential(*units[:boundary]), nn.Sequential(*units[boundary:])
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.inference_mode():
            expected = backbone(probe)
            composed = suffix(prefix(probe))
        same = composed.shape == expected.shape and torch.allclose(composed, expected, rtol=1e-4, atol=1e-5)
    except Exception as exc:  # a chain that cannot even run is simply not splittable
        log.debug("backbone is not a sequential chain (%s): no prefix caching", exc)
        same = False
    finally:
        backbone.train(was_training)
    if not same:
        log.info("%s does not compose as a chain of its children: no prefix caching", type(backbone).__name__)
        return None
    return PrefixSplit(prefix=prefix, suffix=suffix, boundary=boundary, units=len(units))


class SuffixNetwork(nn.Module):
    """``head(suffix(a))`` on cached prefix activations; the full network stays registered, so parameter
    names, freeze groups and eval modes are those of uncached training (the prefix never runs)."""

    def __init__(self, network: nn.Module, suffix: nn.Sequential) -> None:
        super().__init__()
        self.network = network
        self._suffix = [suffix]  # its modules are the network's own: do not register them twice

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        head: nn.Module = self.network.head  # type: ignore[assignment]
        return head(self._suffix[0](activations))


# -- the feature cache -------------------------------------------------------------------------------
# Content-keyed cache of frozen-prefix activations: in memory (per process) and on disk (shared).
#
# A key is the sha256 of everything the activations depend on: the prefix's weights, the boundary,
# the split's pixels and labels, normalization, precision and device kind. Linear probes of a sweep
# at different LRs therefore share one extraction, and workers share it through the disk layer.
# Both layers are bounded in bytes and evict the least recently used entries. Disk file names are
# the hex digest alone (checked), so no key can point outside the cache directory.

_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class CachedFeatures:
    features: torch.Tensor  # float32, on the CPU
    seconds: float  # device-seconds the extraction took when it was computed (tlbench.training.device's rule)
    flops: float  # forward FLOPs of that extraction
    device: str  # where it was computed

    @property
    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size()


def content_key(parts: Iterable[bytes | str]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def module_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's parameters and buffers (names, dtypes, shapes, values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    """LRU in memory, optional LRU directory on disk.

    Our own, not ``functools.lru_cache``: both layers are bounded in bytes, not entries, and the disk
    layer is shared by a sweep's worker processes.
    """

    def __init__(self, *, max_bytes: int, directory: Path | None = None, max_disk_bytes: int = 0) -> None:
        self.max_bytes = max_bytes
        self.directory = directory.resolve() if directory is not None else None
        self.max_disk_bytes = max_disk_bytes
        self._memory: OrderedDict[str, CachedFeatures] = OrderedDict()

    def _path(self, key: str) -> Path:
        if not _HEX.fullmatch(key) or self.directory is None:
            raise ValueError(f"cache keys are sha256 hex digests, got {key!r}")
        path = (self.directory / f"{key}.pt").resolve()
        if path.parent != self.directory:  # defence in depth: the name alone decides the location
            raise ValueError(f"cache path {path} escapes {self.directory}")
        return path

    def get(self, key: str) -> CachedFeatures | None:
        entry = self._memory.get(key)
        if entry is not None:
            self._memory.move_to_end(key)
            return entry
        if self.directory is None:
            return None
        path = self._path(key)
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
            entry = CachedFeatures(
                raw["features"], float(raw["seconds"]), float(raw["flops"]), str(raw["device"])
            )
        except FileNotFoundError:
            return None
        except Exception as exc:  # a torn or foreign file is a miss, and is removed
            log.warning("ignoring unreadable feature-cache file %s (%s)", path, exc)
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # recency for disk LRU
        self._remember(key, entry)
        return entry

    def put(self, key: str, entry: CachedFeatures) -> None:
        self._remember(key, entry)
        if self.directory is None or self.max_disk_bytes <= 0 or entry.nbytes > self.max_disk_bytes:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(key)
        with tempfile.NamedTemporaryFile(dir=self.directory, suffix=".tmp", delete=False) as handle:
            torch.save(dict(vars(entry)), handle)  # features, seconds, flops, device
        os.replace(handle.name, path)  # atomic: readers see the old state or the whole file
        self._evict_disk()

    def _remember(self, key: str, entry: CachedFeatures) -> None:
        if entry.nbytes > self.max_bytes:
            return
        self._memory[key] = entry
        self._memory.move_to_end(key)
        while sum(e.nbytes for e in self._memory.values()) > self.max_bytes:
            self._memory.popitem(last=False)

    def _evict_disk(self) -> None:
        assert self.directory is not None
        files = sorted(self.directory.glob("*.pt"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for path in files:
            if total <= self.max_disk_bytes:
                break
            total -= path.stat().st_size
            path.unlink(missing_ok=True)


# -- the trial's inputs ----------------------------------------------------------------------------

SPLITS = ("train", "val", "test")

Transform = Callable[[torch.Tensor], torch.Tensor]


def batch_transform(
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    *,
    channels_last: bool,
    generator: torch.Generator | None = None,
) -> Transform:
    """Per-batch work on the device: augment (when ``generator`` is given), normalize, memory format."""
    base = BatchTransform(mean=mean, std=std, generator=generator)
    if not channels_last:
        return base
    return lambda batch: base(batch).contiguous(memory_format=torch.channels_last)


_CACHE: FeatureCache | None = None


def feature_cache(cfg: TrainerConfig) -> FeatureCache:
    """The process-wide cache (rebuilt when its settings change)."""
    global _CACHE
    directory = Path(cfg.feature_cache_dir) if cfg.feature_cache_dir else None
    max_bytes, disk = cfg.cache_max_mb * 2**20, cfg.feature_cache_disk_mb * 2**20
    settings = (max_bytes, directory.resolve() if directory else None, disk)
    if _CACHE is None or (_CACHE.max_bytes, _CACHE.directory, _CACHE.max_disk_bytes) != settings:
        _CACHE = FeatureCache(max_bytes=max_bytes, directory=directory, max_disk_bytes=disk)
    return _CACHE


def reset_feature_cache() -> None:
    """Forget this process's in-memory features: the next cached trial extracts (a cache miss)."""
    global _CACHE
    _CACHE = None


@dataclass
class CacheUse:
    """How the trial's inputs were produced (logged as tags and cost metrics)."""

    status: str  # off | miss | hit | partial (some splits hit)
    computed_flops: dict[str, float] = field(default_factory=dict)  # per split, computed by this trial
    reused_flops: dict[str, float] = field(default_factory=dict)  # per split, computed by earlier trials
    reused_seconds: float = 0.0  # device-seconds the reused extractions cost the trials that ran them


Data = dict[str, tuple[torch.Tensor, torch.Tensor]]  # split -> (inputs, labels), on the device


@dataclass
class TrialInputs:
    network: nn.Module  # what the loop trains and what is evaluated, on ``data``
    data: Data
    train_transform: Transform | None
    eval_transform: Transform | None
    cache: CacheUse
    features: Data | None = None  # frozen-backbone features: what the converged probe fits on

    def loader(self, split: str, *, batch_size: int, seed: int) -> InMemoryLoader:
        x, y = self.data[split]
        train = split == "train"
        transform = self.train_transform if train else self.eval_transform
        return InMemoryLoader(x, y, batch_size=batch_size, shuffle=train, seed=seed, transform=transform)


@dataclass(frozen=True)
class Extraction:
    """How frozen-prefix activations are computed: the facts their cache key and cost depend on."""

    backbone: str  # the backbone's name (a cache-key ingredient)
    device: DeviceInfo
    precision: str
    transform: Transform  # the evaluation transform: normalize, memory format
    normalization: tuple[tuple[float, float, float], tuple[float, float, float]]  # (mean, std)
    batch_size: int
    count_flops: bool


@dataclass(frozen=True)
class InputPlan:
    """What a trial's fit will consume, decided before the clock starts (:func:`plan_inputs`)."""

    prefix: PrefixSplit | None  # the frozen prefix to extract; None: images through the whole network
    reason: str  # why caching is on or off (the feature_cache_reason tag)
    extraction: Extraction  # how the prefix runs; its transform is also the evaluation transform
    train_transform: Transform  # training batches: augment (data.augment), normalize, memory format


def plan_inputs(
    cfg: RunConfig,
    model: BuiltModel,
    splits: DataSplits,
    *,
    device: DeviceInfo,
    precision: str,
    channels_last: bool,
) -> InputPlan:
    """The transforms, and whether the frozen prefix's activations are extracted (and why)."""
    eval_transform = batch_transform(model.mean, model.std, channels_last=channels_last)
    generator = (
        torch.Generator(device=device.torch_device).manual_seed(cfg.seed) if cfg.data.augment else None
    )
    train_transform = batch_transform(model.mean, model.std, channels_last=channels_last, generator=generator)
    prefix, reason = plan_prefix_cache(
        model,
        cache_features=cfg.trainer.cache_features,
        augment=cfg.data.augment,
        sample=lambda: eval_transform(splits.train.images[:2]),
    )
    extraction = Extraction(
        backbone=cfg.backbone.name,
        device=device,
        precision=precision,
        transform=eval_transform,
        normalization=(model.mean, model.std),
        batch_size=cfg.trainer.eval_batch_size,
        count_flops=cfg.trainer.count_flops,
    )
    return InputPlan(prefix, reason, extraction, train_transform)


def plan_prefix_cache(
    model: BuiltModel, *, cache_features: bool, augment: bool, sample: Callable[[], torch.Tensor]
) -> tuple[PrefixSplit | None, str]:
    """Cache frozen-prefix activations when they are the same every epoch; otherwise say why not.

    ``sample``: a small normalized batch on the device (what the chain split is verified on).
    """
    if not model.phases:
        return None, "not cacheable: no training"
    first = model.phases[0]
    if not first.in_loop:  # the converged probe always fits on extracted features (lp_ft: its first phase)
        split = split_at_freeze_boundary(model.network.backbone, torch.empty(0))
        assert split is not None  # nothing trainable in the backbone: the whole backbone is the prefix
        if not cache_features:
            return split, "probe features extracted (not kept: trainer.cache_features=false)"
        return split, "frozen prefix = whole backbone" + (" (probe phase)" if len(model.phases) > 1 else "")
    if not cache_features:
        return None, "disabled (trainer.cache_features=false)"
    if len(model.phases) != 1:
        return None, "not cacheable: a later phase unfreezes"
    if first.freeze_depth == 0:
        return None, "not cacheable: nothing frozen"
    if augment:
        return None, "not cacheable: augmentation changes the inputs every epoch"
    split = split_at_freeze_boundary(model.network.backbone, sample())
    if split is None:
        return None, "not cacheable: the backbone does not split into a verifiable chain"
    where = "whole backbone" if split.boundary < 0 else f"{split.boundary}/{split.units} chain units"
    return split, f"frozen prefix = {where}"


def _model_key(how: Extraction, split: PrefixSplit) -> str:
    return content_key(
        [
            how.backbone,
            module_digest(split.prefix),
            str(split.boundary),
            repr(how.normalization),
            how.precision,
            how.device.kind,
            torch.__version__,
        ]
    )


def cached_inputs(
    network: nn.Module, splits: DataSplits, split: PrefixSplit, cache: FeatureCache, how: Extraction
) -> TrialInputs:
    """Activations of the frozen prefix for every split, from the cache or computed (and stored) now;
    ``network`` (whose backbone ``split`` divides) trains on them as suffix + head."""
    suffix_network = SuffixNetwork(network, split.suffix)
    model_key = _model_key(how, split)
    device = how.device.torch_device
    data: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    use = CacheUse(status="miss")
    hits = 0
    for name in SPLITS:
        images = getattr(splits, name)
        key = content_key([model_key, tensor_digest(images.images, images.labels)])
        entry = cache.get(key)
        if entry is not None:
            hits += 1
            use.reused_flops[name] = entry.flops
            use.reused_seconds += entry.seconds
        else:
            prefix, size = split.prefix, how.batch_size
            was_training = prefix.training
            with FitMeter(how.device, memory=False) as clock:  # device-seconds, as the fit's
                prefix.eval()
                batches = [images.images[i : i + size] for i in range(0, len(images), size)]
                with torch.inference_mode(), autocast_context(how.device.kind, how.precision):
                    outputs = [prefix(how.transform(batch)).float() for batch in batches]
                prefix.train(was_training)
                features = torch.cat(outputs).contiguous()  # outside inference mode: the probe trains on it
            flops = 0.0
            if how.count_flops:  # the prefix's count is the same for every split: counted once (memo)
                sample = how.transform(images.images[:2])
                flops = forward_flops_per_sample(prefix, sample, key=model_key) * len(images)
            entry = CachedFeatures(features.cpu(), clock.device_seconds, flops, how.device.name)
            cache.put(key, entry)
            use.computed_flops[name] = flops
        data[name] = (entry.features.to(device), images.labels)
    use.status = {0: "miss", len(SPLITS): "hit"}.get(hits, "partial")
    return TrialInputs(
        suffix_network, data, train_transform=None, eval_transform=None, cache=use, features=data
    )


def trial_inputs(
    model: BuiltModel, splits: DataSplits, plan: InputPlan, *, cache: FeatureCache | None
) -> TrialInputs:
    """The inputs :func:`plan_inputs` planned: the images through the whole network, or the frozen
    prefix's activations; built inside the timed fit phase (extraction is training work). ``cache``:
    None keeps no features (the probe still fits on extracted ones)."""
    images = TrialInputs(
        network=model.network,
        data={name: (getattr(splits, name).images, getattr(splits, name).labels) for name in SPLITS},
        train_transform=plan.train_transform,
        eval_transform=plan.extraction.transform,
        cache=CacheUse(status="off"),
    )
    if plan.prefix is None:
        return images
    inputs = cached_inputs(
        model.network, splits, plan.prefix, cache or FeatureCache(max_bytes=0), plan.extraction
    )
    if cache is None:
        inputs.cache.status = "off"  # extracted for the probe, kept nowhere
    log.info("frozen-prefix features: %s (%s)", inputs.cache.status, plan.reason)
    if model.loop_phases and not model.phases[0].in_loop:  # lp_ft: the probe on features, then images
        # the probe's extraction is this trial's feature-cache use
        return replace(images, cache=inputs.cache, features=inputs.features)
    return inputs
