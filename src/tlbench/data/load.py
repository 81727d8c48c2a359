"""From a :class:`DataConfig` to the train / val / test tensors of one run, and their content keys.

Order: decode the source (cached in-process) -> fix val and test with ``split_seed`` (the source's own
splits, or stratified carving from its train pool) -> cap them per class -> draw ``n_per_class`` from
the remaining pool with the run's seed. Only the last step sees that seed, so evaluation sets are
identical across seeds and training-set sizes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from tlbench.config.schema import DataConfig
from tlbench.data import sources
from tlbench.data.containers import DataSplits, SourceData, TensorSplit
from tlbench.data.splits import cap_per_class, stratified_split, stratified_subset
from tlbench.errors import DataError

log = logging.getLogger(__name__)

FINGERPRINT_LENGTH = 16  # hex digits: 64 bits, ample for a local feature cache
PREPROCESSING = "shorter-side-bilinear-aa+center-crop/v1"  # bump when decoding or resizing changes
CACHE_SIZE = 2  # decoded datasets kept per process: a sweep reuses one, two covers a comparison


def tensor_digest(*tensors: torch.Tensor) -> str:
    """sha256 over the shapes, dtypes and bytes of ``tensors``: decoded pixels, not file names, so a
    copied dataset keeps its key and any change of content or preprocessing changes it."""
    digest = hashlib.sha256()
    for tensor in tensors:
        contiguous = tensor.detach().cpu().contiguous()
        digest.update(f"{contiguous.dtype}{tuple(contiguous.shape)}".encode())
        digest.update(contiguous.reshape(-1).view(torch.uint8).numpy().data)  # a view: no copy
    return digest.hexdigest()


def splits_fingerprint(
    *, dataset: Mapping[str, object], train_indices: np.ndarray, split_params: Mapping[str, object]
) -> str:
    """Short sha256 of the dataset's identity (name, content digest, preprocessing, resolution), the
    split parameters (seeds, fractions, caps) and the train subset's indices within the pool."""
    payload = json.dumps({"dataset": dataset, "split": split_params}, sort_keys=True, default=str)
    digest = hashlib.sha256(payload.encode())
    digest.update(np.ascontiguousarray(train_indices, dtype=np.int64).tobytes())
    return digest.hexdigest()[:FINGERPRINT_LENGTH]


@dataclass(frozen=True)
class _Prepared:
    """Everything of a dataset that depends neither on the run's seed nor on ``n_per_class``."""

    pool: TensorSplit
    val: TensorSplit
    test: TensorSplit
    origins: dict[str, str]  # pool / val / test -> where it came from
    class_names: tuple[str, ...]
    location: str
    content: str  # digest of the decoded source tensors


_cache: OrderedDict[Hashable, _Prepared] = OrderedDict()
_cache_lock = threading.Lock()


def clear_source_cache() -> None:
    """Forget decoded datasets (frees their memory; the next load decodes again)."""
    with _cache_lock:
        _cache.clear()


def _split_params(cfg: DataConfig) -> dict[str, object]:
    return {
        "split_seed": cfg.split_seed,
        "val_fraction": cfg.val_fraction,
        "test_fraction": cfg.test_fraction,
        "max_val_per_class": cfg.max_val_per_class,
        "max_test_per_class": cfg.max_test_per_class,
    }


def _prepare(cfg: DataConfig) -> _Prepared:
    """Decode and split a dataset, or reuse the result while its source and split parameters match.

    The cache holds the split tensors, not the raw decode, so a dataset costs one copy of memory;
    changing split parameters (rare within a sweep) decodes again.
    """
    source = sources.SOURCES[cfg.name]  # a DatasetName (DataConfig checks it): each has a source
    key = (cfg.name.value, source.cache_key(cfg), tuple(_split_params(cfg).items()))
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        data = source.load(cfg)
        parts = [data.train] + [split for split in (data.val, data.test) if split is not None]
        content = tensor_digest(*(t for split in parts for t in (split.images, split.labels)))
        _cache[key] = prepared = _fixed_splits(data, cfg, content)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return prepared


def _fixed_splits(data: SourceData, cfg: DataConfig, content: str) -> _Prepared:
    """Val, test and the train pool, decided by ``split_seed``, fractions and caps only. Samples a cap
    removes do not return to the pool, so the pool does not depend on the caps either."""
    carve = [role for role in ("val", "test") if getattr(data, role) is None]
    fractions = {"val": cfg.val_fraction, "test": cfg.test_fraction}
    parts = stratified_split(
        data.train.labels.numpy(), fractions=[fractions[r] for r in carve], seed=cfg.split_seed
    )
    origin = data.origins.get("train", f"all {len(data.train)} images")
    pool = data.train.take(torch.from_numpy(parts[-1])) if carve else data.train
    origins = {"pool": f"{origin} minus carved {'+'.join(carve)}" if carve else origin}
    held_out: dict[str, TensorSplit] = {}
    for role, cap in (("val", cfg.max_val_per_class), ("test", cfg.max_test_per_class)):
        split: TensorSplit | None = getattr(data, role)
        if split is not None:
            origins[role] = data.origins.get(role, f"the source's {role} split")
        else:
            split = data.train.take(torch.from_numpy(parts[carve.index(role)]))
            _warn_absent_classes(role, split, data.train.labels, data.class_names)
            origins[role] = (
                f"carved from {origin}: {fractions[role]:g} per class, split_seed={cfg.split_seed}"
            )
        if cap is not None:
            kept = cap_per_class(split.labels.numpy(), max_per_class=cap, seed=cfg.split_seed)
            split = split.take(torch.from_numpy(kept))
            origins[role] += f", capped at {cap} per class"
        if not len(split):
            raise DataError(
                f"the {role} split of {cfg.name.value} is empty: every class is too small to carve one; "
                f"add images, raise data.{role}_fraction, or provide a {role} folder"
            )
        held_out[role] = split
    return _Prepared(
        pool, held_out["val"], held_out["test"], origins, data.class_names, data.location, content
    )


def _warn_absent_classes(
    role: str, split: TensorSplit, source_labels: torch.Tensor, names: tuple[str, ...]
) -> None:
    counts = torch.bincount(source_labels, minlength=len(names)).tolist()
    present = set(split.labels.unique().tolist())
    absent = ", ".join(
        f"{names[i]} ({n} in the pool)" for i, n in enumerate(counts) if n and i not in present
    )
    if absent:
        why = "too small to spare an image for the carved %s split (their %s accuracy is not measured)"
        log.warning(f"classes {why}: %s", role, role, absent)


def load_splits(cfg: DataConfig, *, seed: int) -> DataSplits:
    """Train / val / test tensors for one run; ``seed`` selects only the ``n_per_class`` subset. A
    :class:`DataError` if the dataset is missing or unreadable, or too small for ``n_per_class``."""
    prepared = _prepare(cfg)
    pool, val, origins = prepared.pool, prepared.val, prepared.origins
    indices = stratified_subset(
        pool.labels.numpy(), n_per_class=cfg.n_per_class, seed=seed, class_names=prepared.class_names
    )
    train = pool if cfg.n_per_class is None else pool.take(torch.from_numpy(indices))
    split_params = _split_params(cfg)
    per_class = "all" if cfg.n_per_class is None else f"{cfg.n_per_class} per class, seed {seed}"
    if cfg.train_on_val:  # a winner's retraining: every labelled image but the test split's
        train = TensorSplit(torch.cat([train.images, val.images]), torch.cat([train.labels, val.labels]))
        split_params["train_on_val"] = True  # only when set: other fingerprints stay as they were
        per_class += f", plus the {len(val)} validation images (data.train_on_val)"
    dataset = {
        "name": cfg.name.value,
        "content": prepared.content,
        "preprocessing": PREPROCESSING,
        "resolution": cfg.resolution,
    }
    description = (
        f"{cfg.name.value} from {prepared.location}: {len(prepared.class_names)} classes at {cfg.resolution}"
        f"px; train {len(train)} of a {len(pool)}-image pool ({per_class}; pool = {origins['pool']}); "
        f"val {len(val)} ({origins['val']}); test {len(prepared.test)} ({origins['test']})"
    )
    log.info("%s", description)
    return DataSplits(
        train=train,
        val=val,
        test=prepared.test,
        class_names=prepared.class_names,
        pool_size=len(pool),
        description=description,
        fingerprint=splits_fingerprint(dataset=dataset, train_indices=indices, split_params=split_params),
        val_in_train=cfg.train_on_val,
    )
