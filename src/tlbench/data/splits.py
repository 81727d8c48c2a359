"""Deterministic stratified partitioning and subsetting of label arrays (pure, numpy only).

Every function draws one permutation per class from its own generator, seeded by
``(purpose, seed, class label)``. A class's order therefore depends only on the seed and on which
indices carry that label, never on the other classes, and the three purposes (splitting, subsetting,
capping) never share a stream even when their seeds are equal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tlbench.errors import DataError

_SPLIT_STREAM = 1
_SUBSET_STREAM = 2
_CAP_STREAM = 3


def _check_labels(labels: np.ndarray) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
        raise ValueError(f"labels must be a 1-D integer array; got {array.dtype} with shape {array.shape}")
    if array.size and array.min() < 0:
        raise ValueError(f"labels must be >= 0; got min {array.min()}")
    return array.astype(np.int64, copy=False)


def _check_seed(seed: int) -> None:
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed=}")


def _per_class_orders(labels: np.ndarray, *, seed: int, stream: int) -> dict[int, np.ndarray]:
    """Each present class -> its sample indices in a seeded random order."""
    order = np.argsort(labels, kind="stable")
    classes, starts = np.unique(labels[order], return_index=True)
    groups = np.split(order, starts[1:]) if order.size else []
    orders: dict[int, np.ndarray] = {}
    for label, group in zip(classes.tolist(), groups, strict=True):
        rng = np.random.default_rng([stream, seed, label])
        orders[label] = group[rng.permutation(group.size)]
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
    """Partition indices into held-out parts of the given fractions plus a remainder, per class.

    For each class with ``n`` samples, part ``i`` receives ``floor(fractions[i] * n + 0.5)`` samples
    (round half up), taken consecutively from the class's seeded permutation; everything left goes to
    the final, extra part (the remainder). When rounding would leave a class nothing in the remainder,
    the held-out counts are lowered, last part first, so every class keeps at least one sample there:
    a class with a single sample always lands in the remainder. Held-out parts may therefore lack
    small classes; callers warn about that.

    Args:
        labels: Class index of every sample.
        fractions: Share of each class for each held-out part; each in [0, 1), summing to < 1.
        seed: Selects the permutation; the same labels and seed always give the same parts.

    Returns:
        ``len(fractions) + 1`` arrays of sorted indices into ``labels``: the held-out parts in the
        order of ``fractions``, then the remainder. Together they cover every index exactly once.
    """
    array = _check_labels(labels)
    _check_seed(seed)
    if any(not 0.0 <= fraction < 1.0 for fraction in fractions) or sum(fractions) >= 1.0:
        raise ValueError(f"fractions must each be in [0, 1) and sum to < 1; got {list(fractions)=}")
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for order in _per_class_orders(array, seed=seed, stream=_SPLIT_STREAM).values():
        start = 0
        for part, count in zip(parts, _held_out_counts(order.size, fractions), strict=False):
            part.append(order[start : start + count])
            start += count
        parts[-1].append(order[start:])
    return [np.sort(np.concatenate(part)) if part else np.empty(0, np.int64) for part in parts]


def stratified_subset(
    labels: np.ndarray,
    *,
    n_per_class: int | None,
    seed: int,
    class_names: Sequence[str],
) -> np.ndarray:
    """Draw ``n_per_class`` samples of every class without replacement.

    The subset for ``n`` is the first ``n`` entries of one seeded permutation per class, so with the
    same seed the subset for a smaller ``n`` is contained in the subset for a larger one: points on a
    data-scaling curve differ only by the added samples, not by a fresh draw.

    Args:
        labels: Class index of every sample of the pool.
        n_per_class: Samples per class; ``None`` keeps the whole pool.
        seed: The run's seed.
        class_names: Names of all classes, indexed by label; every one must be drawable.

    Returns:
        Sorted indices into ``labels``.

    Raises:
        DataError: A class has fewer than ``n_per_class`` samples; names the class, its count and the
            largest valid ``n_per_class``.
    """
    array = _check_labels(labels)
    _check_seed(seed)
    if array.size and array.max() >= len(class_names):
        raise ValueError(f"label {array.max()} has no entry in {len(class_names)} class_names")
    if n_per_class is None:
        return np.arange(array.size, dtype=np.int64)
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1 or None, got {n_per_class=}")
    counts = np.bincount(array, minlength=len(class_names))
    short = [(class_names[int(i)], int(counts[i])) for i in np.flatnonzero(counts < n_per_class)]
    if short:
        raise DataError(_too_few_message(short, n_per_class=n_per_class, largest=int(counts.min())))
    orders = _per_class_orders(array, seed=seed, stream=_SUBSET_STREAM)
    return np.sort(np.concatenate([order[:n_per_class] for order in orders.values()]))


def _too_few_message(short: list[tuple[str, int]], *, n_per_class: int, largest: int) -> str:
    listed = ", ".join(f"{name!r} ({count} images)" for name, count in short[:5])
    more = f" and {len(short) - 5} more classes" if len(short) > 5 else ""
    fix = (
        f"use data.n_per_class <= {largest}, or data.n_per_class=null for the whole pool"
        if largest >= 1
        else "a class without training images cannot be subset: use data.n_per_class=null or add images"
    )
    return f"data.n_per_class={n_per_class} is more than the train pool holds for class {listed}{more}; {fix}"


def cap_per_class(labels: np.ndarray, *, max_per_class: int | None, seed: int) -> np.ndarray:
    """Keep at most ``max_per_class`` seeded samples of each class (all of a smaller class).

    Used to bound the cost of evaluating on large validation and test sets while keeping them
    stratified. Returns sorted indices into ``labels``; ``None`` keeps everything.
    """
    array = _check_labels(labels)
    _check_seed(seed)
    if max_per_class is None:
        return np.arange(array.size, dtype=np.int64)
    if max_per_class < 1:
        raise ValueError(f"max_per_class must be >= 1 or None, got {max_per_class=}")
    orders = _per_class_orders(array, seed=seed, stream=_CAP_STREAM)
    kept = [order[:max_per_class] for order in orders.values()]
    return np.sort(np.concatenate(kept)) if kept else np.empty(0, np.int64)
