"""From a :class:`DataConfig` to the train / val / test tensors of one run, and their content keys.

Order: decode the source (cached in-process) -> fix val and test with ``split_seed`` (the source's own
splits, or stratified carving from its train pool) -> cap them per class -> draw ``n_per_class`` from
the remaining pool with the run's seed. Only the last step sees that seed, so evaluation sets are
identical across seeds and training-set sizes.

Partitioning and subsetting are deterministic and stratified: each class gets its own permutation from
a generator seeded by ``(purpose, seed, class label)``, so a class's order depends only on the seed and
its own indices, and splitting, subsetting and capping never share a stream even when their seeds are
equal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tlbench.config.schema import DataConfig
from tlbench.data import sources
from tlbench.data.sources import SourceData, TensorSplit
from tlbench.errors import DataError

log = logging.getLogger(__name__)

FINGERPRINT_LENGTH = 16  # hex digits: 64 bits, ample for a local feature cache
PREPROCESSING = "shorter-side-bilinear-aa+center-crop/v1"  # bump when decoding or resizing changes
CACHE_SIZE = 2  # decoded datasets kept per process: a sweep reuses one, two covers a comparison

_SPLIT_STREAM = 1
_SUBSET_STREAM = 2
_CAP_STREAM = 3


def _per_class_orders(labels: np.ndarray, *, seed: int, stream: int) -> list[np.ndarray]:
    """Each present class's sample indices in a seeded random order, by class label."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed=}")  # numpy seed sequences need it
    order = np.argsort(labels, kind="stable")
    classes, starts = np.unique(labels[order], return_index=True)
    groups = np.split(order, starts[1:]) if order.size else []
    orders = []
    for label, group in zip(classes.tolist(), groups, strict=True):
        orders.append(group[np.random.default_rng([stream, seed, label]).permutation(group.size)])
    return orders


def _held_out_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Round-half-up share of ``n`` for each fraction, trimmed (last first) to leave >= 1 remaining."""
    counts = [math.floor(fraction * n + 0.5) for fraction in fractions]
    position = len(counts) - 1
    while n > 0 and sum(counts) >= n:
        while counts[position] == 0:
            position -= 1
        counts[position] -= 1
    return counts


def stratified_split(labels: np.ndarray, *, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Sorted indices of held-out parts of the given fractions, then of the remainder (together: every
    index once). A class of ``n`` gives part ``i`` the next ``floor(fractions[i] * n + 0.5)`` of its seeded
    permutation (lowered, last part first, to leave the remainder one: held-out parts may lack small
    classes, which callers warn about)."""
    if any(not 0.0 <= fraction < 1.0 for fraction in fractions) or sum(fractions) >= 1.0:
        raise ValueError(f"fractions must each be in [0, 1) and sum to < 1; got {list(fractions)=}")
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for order in _per_class_orders(np.asarray(labels), seed=seed, stream=_SPLIT_STREAM):
        start = 0
        for part, count in zip(parts, _held_out_counts(order.size, fractions), strict=False):
            part.append(order[start : start + count])
            start += count
        parts[-1].append(order[start:])
    return [np.sort(np.concatenate(part)) if part else np.empty(0, np.int64) for part in parts]


def stratified_subset(
    labels: np.ndarray, *, n_per_class: int | None, seed: int, class_names: Sequence[str]
) -> np.ndarray:
    """Sorted indices of ``n_per_class`` samples of every class (``None``: all): the first ``n`` of one
    seeded permutation per class, so with one seed a smaller subset lies in a larger one (points on a
    data-scaling curve differ only by the added samples). A class too small is a :class:`DataError`."""
    array = np.asarray(labels)
    if array.size and array.max() >= len(class_names):
        raise ValueError(f"label {array.max()} has no entry in {len(class_names)} class_names")
    if n_per_class is None:
        return np.arange(array.size, dtype=np.int64)
    counts = np.bincount(array, minlength=len(class_names))
    short = [(class_names[int(i)], int(counts[i])) for i in np.flatnonzero(counts < n_per_class)]
    if short:
        listed = ", ".join(f"{name!r} ({count} images)" for name, count in short[:5])
        more = f" and {len(short) - 5} more classes" if len(short) > 5 else ""
        largest = int(counts.min())
        fix = (
            f"use data.n_per_class <= {largest}, or data.n_per_class=null for the whole pool"
            if largest >= 1
            else "a class without training images cannot be subset: use data.n_per_class=null or add images"
        )
        raise DataError(
            f"data.n_per_class={n_per_class} is more than the train pool holds for class {listed}{more}; "
            + fix
        )
    orders = _per_class_orders(array, seed=seed, stream=_SUBSET_STREAM)
    return np.sort(np.concatenate([order[:n_per_class] for order in orders]))


def cap_per_class(labels: np.ndarray, *, max_per_class: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_per_class`` seeded samples of each class (``None``: all): bounds
    the cost of evaluating on large validation and test sets, still stratified."""
    if max_per_class is None:
        return np.arange(len(labels), dtype=np.int64)
    kept = [
        order[:max_per_class]
        for order in _per_class_orders(np.asarray(labels), seed=seed, stream=_CAP_STREAM)
    ]
    return np.sort(np.concatenate(kept)) if kept else np.empty(0, np.int64)


@dataclass(frozen=True, eq=False)
class DataSplits:
    """Train / validation / test tensors of one run, plus what identifies them."""

    train: TensorSplit  # the n_per_class subset drawn from the train pool with the run's seed
    val: TensorSplit  # fixed by split_seed alone, like test: never changes with n_per_class or the seed
    test: TensorSplit
    class_names: tuple[str, ...]
    pool_size: int  # the train pool the subset was drawn from
    description: str  # one line for logs: dataset, source path, split sizes and where each came from
    # short sha256 of content, preprocessing, resolution, split parameters and the exact train subset
    fingerprint: str
    # train also holds every val image (data.train_on_val): validation can measure and choose nothing
    val_in_train: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        """1 for grayscale sources (expanded to 3 by :func:`tlbench.data.normalize`), else 3."""
        return int(self.train.images.shape[1])


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


# key -> the source with val and test fixed (its train is the pool; origins: pool / val / test), and
# the digest of its decoded tensors: everything that depends neither on the seed nor on n_per_class
_cache: OrderedDict[Hashable, tuple[SourceData, str]] = OrderedDict()
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


def _prepare(cfg: DataConfig) -> tuple[SourceData, str]:
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
        _cache[key] = prepared = (_fixed_splits(data, cfg), content)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return prepared


def _fixed_splits(data: SourceData, cfg: DataConfig) -> SourceData:
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
    return SourceData(pool, held_out["val"], held_out["test"], data.class_names, data.location, origins)


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
    prepared, content = _prepare(cfg)
    pool, val, test, origins = prepared.train, prepared.val, prepared.test, prepared.origins
    assert val is not None and test is not None  # _fixed_splits fills both
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
        "content": content,
        "preprocessing": PREPROCESSING,
        "resolution": cfg.resolution,
    }
    description = (
        f"{cfg.name.value} from {prepared.location}: {len(prepared.class_names)} classes at {cfg.resolution}"
        f"px; train {len(train)} of a {len(pool)}-image pool ({per_class}; pool = {origins['pool']}); "
        f"val {len(val)} ({origins['val']}); test {len(test)} ({origins['test']})"
    )
    log.info("%s", description)
    return DataSplits(
        train=train,
        val=val,
        test=test,
        class_names=prepared.class_names,
        pool_size=len(pool),
        description=description,
        fingerprint=splits_fingerprint(dataset=dataset, train_indices=indices, split_params=split_params),
        val_in_train=cfg.train_on_val,
    )
