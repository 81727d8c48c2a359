"""Step 2 of a trial: what the fit consumes, images through the whole network or cached frozen-prefix
activations.

A linear probe (and ``partial`` without augmentation) computes the frozen prefix once per split
and trains only the suffix + head on the stored activations; ``lp_ft`` fits its probe on the
features and fine-tunes on the images. The extraction runs inside the timed
fit phase, so its cost is counted exactly once: by the trial that computed it. A trial that reuses
an earlier extraction records that reuse (``feature_cache=hit``) and what it would have cost alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tlbench.config.schema import TrainerConfig
from tlbench.cost.device import autocast_context
from tlbench.cost.flops import measure_forward_flops
from tlbench.cost.meter import FitMeter
from tlbench.data import InMemoryLoader, TensorSplit
from tlbench.data.fingerprint import tensor_digest
from tlbench.training.feature_cache import CachedFeatures, FeatureCache, content_key, module_digest
from tlbench.training.prefix import PrefixSplit, SuffixNetwork
from tlbench.training.prepare import PreparedTrial, Transform

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")

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
    reason: str = ""
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


def _split(prepared: PreparedTrial, name: str) -> TensorSplit:
    split: TensorSplit = getattr(prepared.splits, name)
    return split


def image_inputs(prepared: PreparedTrial, reason: str) -> TrialInputs:
    data = {name: (_split(prepared, name).images, _split(prepared, name).labels) for name in SPLITS}
    return TrialInputs(
        network=prepared.model.network,
        data=data,
        train_transform=prepared.transform(train=True),
        eval_transform=prepared.transform(train=False),
        cache=CacheUse(status="off", reason=reason),
    )


def _extract(prepared: PreparedTrial, prefix: nn.Module, split: TensorSplit) -> torch.Tensor:
    transform = prepared.transform(train=False)
    batch = prepared.cfg.trainer.eval_batch_size
    outputs = []
    was_training = prefix.training
    prefix.eval()
    with torch.inference_mode(), autocast_context(prepared.device.kind, prepared.precision):
        for start in range(0, len(split), batch):
            outputs.append(prefix(transform(split.images[start : start + batch])).float())
    prefix.train(was_training)
    return torch.cat(outputs).contiguous()


def _model_key(prepared: PreparedTrial, split: PrefixSplit) -> str:
    model = prepared.model
    return content_key(
        [
            prepared.cfg.backbone.name,
            module_digest(split.prefix),
            str(split.boundary),
            repr((model.mean, model.std)),
            prepared.precision,
            prepared.device.kind,
            torch.__version__,
        ]
    )


def cached_inputs(prepared: PreparedTrial, split: PrefixSplit, cache: FeatureCache) -> TrialInputs:
    """Activations of the frozen prefix for every split, from the cache or computed (and stored) now."""
    model_key = _model_key(prepared, split)
    device = prepared.device.torch_device
    data: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    use = CacheUse(status="miss")
    hits = 0
    for name in SPLITS:
        images = _split(prepared, name)
        key = content_key([model_key, tensor_digest(images.images, images.labels)])
        entry = cache.get(key)
        if entry is not None:
            hits += 1
            use.reused_flops[name] = entry.flops
            use.reused_seconds += entry.seconds
        else:
            with FitMeter(prepared.device, memory=False) as clock:  # device-seconds, as the fit's
                features = _extract(prepared, split.prefix, images)
            seconds = clock.device_seconds
            count = prepared.cfg.trainer.count_flops
            flops = _prefix_flops(prepared, split.prefix, images, model_key) if count else 0.0
            entry = CachedFeatures(features.cpu(), seconds, flops, prepared.device.name)
            cache.put(key, entry)
            use.computed_flops[name] = flops
        data[name] = (entry.features.to(device), images.labels)
    use.status = {0: "miss", len(SPLITS): "hit"}.get(hits, "partial")
    network = SuffixNetwork(prepared.model.network, split.suffix)
    return TrialInputs(network, data, train_transform=None, eval_transform=None, cache=use, features=data)


# (model key, sample shape) -> forward FLOPs of the prefix per sample. Counting costs ~0.5 s of Python
# per call on a CPU and the answer is the same for every split and every trial on this prefix.
_PREFIX_FLOPS: dict[tuple[str, tuple[int, ...]], float] = {}


def forget_prefix_flops() -> None:
    """Forget the frozen prefixes' FLOP counts measured so far (the next trial counts its own again)."""
    _PREFIX_FLOPS.clear()


def _prefix_flops(prepared: PreparedTrial, prefix: nn.Module, split: TensorSplit, model_key: str) -> float:
    probe = prepared.transform(train=False)(split.images[:2])
    key = (model_key, tuple(probe.shape[1:]))
    if key not in _PREFIX_FLOPS:
        _PREFIX_FLOPS[key] = measure_forward_flops(prefix, probe) / probe.shape[0]
    return _PREFIX_FLOPS[key] * len(split)


def trial_inputs(prepared: PreparedTrial) -> TrialInputs:
    """The inputs prepare() planned (``prefix_split``); build them inside the timed fit phase
    (extraction is training work)."""
    split, reason = prepared.prefix_split, prepared.cache_reason
    if split is None:
        return image_inputs(prepared, reason)
    trainer, model = prepared.cfg.trainer, prepared.model
    # Without caching, the probe still fits on extracted features: a cache that keeps nothing.
    cache = feature_cache(trainer) if trainer.cache_features else FeatureCache(max_bytes=0)
    inputs = cached_inputs(prepared, split, cache)
    if not trainer.cache_features:
        inputs.cache.status = "off"  # extracted for the probe, kept nowhere
    log.info("frozen-prefix features: %s (%s)", inputs.cache.status, reason)
    if model.loop_phases and not model.phases[0].in_loop:  # lp_ft: the probe on features, then images
        images = image_inputs(prepared, reason)
        images.cache = inputs.cache  # the probe's extraction is this trial's feature-cache use
        images.features = inputs.features
        return images
    return inputs
