"""Deterministic stratified partitioning and subsetting of label arrays (pure, numpy only).

Each class gets its own permutation from a generator seeded by ``(purpose, seed, class label)``, so a
class's order depends only on the seed and its own indices, and splitting, subsetting and capping never
share a stream even when their seeds are equal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tlbench.errors import DataError

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
