"""From a :class:`DataConfig` to the train / val / test tensors of one run, and their content keys.

Order of operations: decode the source (cached in-process) -> fix val and test with ``split_seed``
(the source's own splits, or stratified carving from its train pool) -> cap them per class ->
draw ``n_per_class`` from the remaining train pool with the run's seed. Only the last step sees the
run's seed, so evaluation sets are identical across seeds and training-set sizes.
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
from tlbench.data.containers import DataSplits, SourceData, TensorSplit
from tlbench.data.sources import get_source
from tlbench.data.splits import cap_per_class, stratified_split, stratified_subset
from tlbench.errors import DataError

log = logging.getLogger(__name__)

FINGERPRINT_LENGTH = 16  # hex digits: 64 bits, ample for a local feature cache


def tensor_digest(*tensors: torch.Tensor) -> str:
    """sha256 over the shapes, dtypes and bytes of ``tensors``.

    Hashing decoded pixels rather than file names means a dataset copied elsewhere keeps its key,
    and any change of content or preprocessing changes it.
    """
    digest = hashlib.sha256()
    for tensor in tensors:
        contiguous = tensor.detach().cpu().contiguous()
        digest.update(f"{contiguous.dtype}{tuple(contiguous.shape)}".encode())
        digest.update(contiguous.reshape(-1).view(torch.uint8).numpy().data)  # a view: no copy
    return digest.hexdigest()


def splits_fingerprint(
    *,
    dataset: Mapping[str, object],
    train_indices: np.ndarray,
    split_params: Mapping[str, object],
) -> str:
    """Short sha256 of dataset identity, split parameters and the train subset indices.

    Args:
        dataset: JSON-serialisable identity: name, content digest, preprocessing, resolution.
        train_indices: Indices of the training subset within the train pool.
        split_params: Everything that decides val/test and the pool (seeds, fractions, caps).
    """
    payload = json.dumps({"dataset": dataset, "split": split_params}, sort_keys=True, default=str)
    digest = hashlib.sha256(payload.encode())
    digest.update(np.ascontiguousarray(train_indices, dtype=np.int64).tobytes())
    return digest.hexdigest()[:FINGERPRINT_LENGTH]


PREPROCESSING = "shorter-side-bilinear-aa+center-crop/v1"  # bump when decoding or resizing changes
CACHE_SIZE = 2  # decoded datasets kept per process: a sweep reuses one, two covers a comparison


@dataclass(frozen=True)
class _FixedSplits:
    pool: TensorSplit
    val: TensorSplit
    test: TensorSplit
    origins: dict[str, str]


@dataclass(frozen=True)
class _Prepared:
    """Everything of a dataset that does not depend on the run's seed or ``n_per_class``."""

    splits: _FixedSplits
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
    source = get_source(cfg.name)
    key = (cfg.name.value, source.cache_key(cfg), tuple(_split_params(cfg).items()))
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        data = source.load(cfg)
        parts = [data.train] + [split for split in (data.val, data.test) if split is not None]
        content = tensor_digest(*(t for split in parts for t in (split.images, split.labels)))
        prepared = _Prepared(fixed_splits(data, cfg), data.class_names, data.location, content)
        _cache[key] = prepared
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return prepared


def _warn_absent_classes(
    role: str, split: TensorSplit, source_labels: torch.Tensor, names: tuple[str, ...]
) -> None:
    counts = torch.bincount(source_labels, minlength=len(names)).tolist()
    present = set(split.labels.unique().tolist())
    absent = [
        f"{names[i]} ({counts[i]} in the pool)" for i in range(len(names)) if i not in present and counts[i]
    ]
    if absent:
        log.warning(
            "classes too small to spare an image for the carved %s split "
            "(their %s accuracy is not measured): %s",
            role,
            role,
            ", ".join(absent),
        )


def _held_out(
    role: str, data: SourceData, cfg: DataConfig, carved: np.ndarray | None
) -> tuple[TensorSplit, str]:
    """The source's own ``role`` split, or the part carved for it from the source's train pool."""
    own: TensorSplit | None = getattr(data, role)
    if own is not None:
        return own, data.origins.get(role, f"the source's {role} split")
    assert carved is not None
    split = data.train.take(torch.from_numpy(carved))
    _warn_absent_classes(role, split, data.train.labels, data.class_names)
    fraction = cfg.val_fraction if role == "val" else cfg.test_fraction
    origin = data.origins.get("train", f"all {len(data.train)} images")
    return split, f"carved from {origin}: {fraction:g} per class, split_seed={cfg.split_seed}"


def fixed_splits(data: SourceData, cfg: DataConfig) -> _FixedSplits:
    """Val, test and the train pool, decided by ``split_seed``, fractions and caps only.

    Samples removed by a cap are not returned to the train pool, so the pool does not depend on
    the caps either.
    """
    carve = [role for role in ("val", "test") if getattr(data, role) is None]
    fractions = [cfg.val_fraction if role == "val" else cfg.test_fraction for role in carve]
    parts = stratified_split(data.train.labels.numpy(), fractions=fractions, seed=cfg.split_seed)
    carved = dict(zip(carve, parts, strict=False))
    origin = data.origins.get("train", f"all {len(data.train)} images")
    pool = data.train.take(torch.from_numpy(parts[-1])) if carve else data.train
    origins = {"pool": f"{origin} minus carved {'+'.join(carve)}" if carve else origin}
    held_out: dict[str, TensorSplit] = {}
    for role, cap in (("val", cfg.max_val_per_class), ("test", cfg.max_test_per_class)):
        split, origins[role] = _held_out(role, data, cfg, carved.get(role))
        if cap is not None:
            kept = cap_per_class(split.labels.numpy(), max_per_class=cap, seed=cfg.split_seed)
            split, origins[role] = (
                split.take(torch.from_numpy(kept)),
                f"{origins[role]}, capped at {cap} per class",
            )
        if not len(split):
            raise DataError(
                f"the {role} split of {cfg.name.value} is empty: every class is too small to carve one; "
                f"add images, raise data.{role}_fraction, or provide a {role} folder"
            )
        held_out[role] = split
    return _FixedSplits(pool, held_out["val"], held_out["test"], origins)


def load_splits(cfg: DataConfig, *, seed: int) -> DataSplits:
    """Train / val / test tensors for one run.

    Args:
        cfg: Dataset, split protocol and preprocessing.
        seed: The run's seed; it selects only the ``n_per_class`` training subset.

    Raises:
        DataError: The dataset is missing or unreadable, or too small for ``n_per_class``.
    """
    prepared = _prepare(cfg)
    fixed = prepared.splits
    indices = stratified_subset(
        fixed.pool.labels.numpy(), n_per_class=cfg.n_per_class, seed=seed, class_names=prepared.class_names
    )
    train = fixed.pool if cfg.n_per_class is None else fixed.pool.take(torch.from_numpy(indices))
    split_params = _split_params(cfg)
    if cfg.train_on_val:  # a winner's retraining: every labelled image but the test split's
        train = TensorSplit(
            torch.cat([train.images, fixed.val.images]), torch.cat([train.labels, fixed.val.labels])
        )
        split_params["train_on_val"] = True  # only when set: other fingerprints stay as they were
    dataset = {
        "name": cfg.name.value,
        "content": prepared.content,
        "preprocessing": PREPROCESSING,
        "resolution": cfg.resolution,
    }
    splits = DataSplits(
        train=train,
        val=fixed.val,
        test=fixed.test,
        class_names=prepared.class_names,
        pool_size=len(fixed.pool),
        description=_describe(cfg, prepared, train=train, seed=seed),
        fingerprint=splits_fingerprint(dataset=dataset, train_indices=indices, split_params=split_params),
        val_in_train=cfg.train_on_val,
    )
    log.info("%s", splits.description)
    return splits


def _describe(cfg: DataConfig, prepared: _Prepared, *, train: TensorSplit, seed: int) -> str:
    fixed, origins, classes = prepared.splits, prepared.splits.origins, len(prepared.class_names)
    per_class = "all" if cfg.n_per_class is None else f"{cfg.n_per_class} per class, seed {seed}"
    if cfg.train_on_val:
        per_class += f", plus the {len(fixed.val)} validation images (data.train_on_val)"
    return (
        f"{cfg.name.value} from {prepared.location}: {classes} classes at {cfg.resolution}px; "
        f"train {len(train)} of a {len(fixed.pool)}-image pool ({per_class}; pool = {origins['pool']}); "
        f"val {len(fixed.val)} ({origins['val']}); test {len(fixed.test)} ({origins['test']})"
    )
