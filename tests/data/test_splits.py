from __future__ import annotations

import numpy as np
import pytest

from tlbench.data.load import cap_per_class, stratified_split, stratified_subset
from tlbench.errors import DataError

NAMES = ("ant", "bee", "wasp")


def labels_with_counts(*counts: int) -> np.ndarray:
    """Interleaved labels so class membership does not follow index order."""
    labels = np.concatenate([np.full(count, cls) for cls, count in enumerate(counts)])
    return np.random.default_rng(123).permutation(labels)


@pytest.mark.parametrize(
    ("counts", "fractions", "expected"),
    [
        # round-half-up per class: 10 * 0.2 = 2, 10 * 0.25 = 2.5 -> 3, rest 5
        ((10, 10), (0.2, 0.25), [(2, 3, 5), (2, 3, 5)]),
        # a single-sample class always stays in the remainder
        ((40, 1), (0.2, 0.25), [(8, 10, 22), (0, 0, 1)]),
        # rounding would empty the remainder: the last held-out part gives way first
        ((2, 3), (0.25, 0.25), [(1, 0, 1), (1, 1, 1)]),
        # no held-out parts: everything is the remainder
        ((4, 5), (), [(4,), (5,)]),
    ],
)
def test_stratified_split_counts(
    counts: tuple[int, ...], fractions: tuple[float, ...], expected: list
) -> None:
    labels = labels_with_counts(*counts)
    parts = stratified_split(labels, fractions=fractions, seed=0)
    # every part holds the documented number of samples of each class
    for cls, per_part in enumerate(expected):
        assert tuple(int((labels[part] == cls).sum()) for part in parts) == per_part


def test_stratified_split_partitions_every_index_once() -> None:
    labels = labels_with_counts(17, 9, 33)
    parts = stratified_split(labels, fractions=(0.2, 0.3), seed=4)
    # the parts are disjoint, sorted, and cover all indices
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(labels.size))
    assert all(np.array_equal(part, np.sort(part)) for part in parts)


@pytest.mark.parametrize("seed", [0, 1, 99])
def test_stratified_split_is_deterministic_per_seed(seed: int) -> None:
    labels = labels_with_counts(30, 30, 30)
    first = stratified_split(labels, fractions=(0.2,), seed=seed)
    second = stratified_split(labels.copy(), fractions=(0.2,), seed=seed)
    # the same labels and seed always give the same parts
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_stratified_split_differs_between_seeds() -> None:
    labels = labels_with_counts(30, 30, 30)
    # another seed picks another validation set
    assert not np.array_equal(
        stratified_split(labels, fractions=(0.2,), seed=0)[0],
        stratified_split(labels, fractions=(0.2,), seed=1)[0],
    )


def test_stratified_split_class_order_is_independent_of_other_classes() -> None:
    labels = np.array([0] * 20 + [1] * 20)
    grown = np.array([0] * 20 + [1] * 20 + [2] * 50)
    # adding a class leaves the held-out samples of existing classes unchanged
    assert np.array_equal(
        stratified_split(labels, fractions=(0.25,), seed=3)[0],
        stratified_split(grown, fractions=(0.25,), seed=3)[0][:10],
    )


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (1.0,), (-0.1,)])
def test_stratified_split_rejects_bad_fractions(fractions: tuple[float, ...]) -> None:
    # fractions that leave no remainder or are negative are programming errors
    with pytest.raises(ValueError, match="fractions"):
        stratified_split(np.zeros(10, dtype=int), fractions=fractions, seed=0)


@pytest.mark.parametrize("n_per_class", [1, 5, 12])
def test_stratified_subset_exact_counts(n_per_class: int) -> None:
    labels = labels_with_counts(12, 20, 15)
    subset = stratified_subset(labels, n_per_class=n_per_class, seed=0, class_names=NAMES)
    # exactly n of every class, no repeats, sorted
    assert np.bincount(labels[subset], minlength=3).tolist() == [n_per_class] * 3
    assert np.unique(subset).size == subset.size and np.array_equal(subset, np.sort(subset))


def test_stratified_subset_none_keeps_everything() -> None:
    labels = labels_with_counts(3, 4, 5)
    # None = the whole pool in index order
    assert np.array_equal(
        stratified_subset(labels, n_per_class=None, seed=0, class_names=NAMES), np.arange(12)
    )


def test_stratified_subset_deterministic_and_seed_dependent() -> None:
    labels = labels_with_counts(50, 50, 50)
    draw = lambda seed: stratified_subset(labels, n_per_class=10, seed=seed, class_names=NAMES)  # noqa: E731
    # same seed, same subset; another seed, another subset
    assert np.array_equal(draw(7), draw(7))
    assert not np.array_equal(draw(7), draw(8))


@pytest.mark.parametrize(("small", "large"), [(1, 2), (10, 20), (5, 50)])
def test_stratified_subset_is_nested(small: int, large: int) -> None:
    labels = labels_with_counts(50, 60, 70)
    subsets = [stratified_subset(labels, n_per_class=n, seed=3, class_names=NAMES) for n in (small, large)]
    # with one seed the smaller subset is contained in the larger one
    assert set(subsets[0]) <= set(subsets[1])


def test_stratified_subset_does_not_share_the_split_stream() -> None:
    labels = labels_with_counts(40, 40, 40)
    held_out = stratified_split(labels, fractions=(0.25,), seed=0)[0]
    subset = stratified_subset(labels, n_per_class=10, seed=0, class_names=NAMES)
    # equal seeds for splitting and subsetting do not make the subset repeat the held-out draw
    assert not np.array_equal(held_out, subset)


@pytest.mark.parametrize(
    ("counts", "n_per_class", "pattern"),
    [
        # the short class, its size and the largest valid n are all named
        ((30, 8, 30), 10, r"class 'bee' \(8 images\); use data\.n_per_class <= 8"),
        # several short classes are listed; the bound is the smallest class
        ((4, 6, 30), 10, r"'ant' \(4 images\), 'bee' \(6 images\); .*n_per_class <= 4"),
        # a class absent from the pool cannot be subset at all
        ((5, 5, 0), 2, r"'wasp' \(0 images\); .*n_per_class=null"),
    ],
)
def test_stratified_subset_too_large_names_the_class(
    counts: tuple[int, ...], n_per_class: int, pattern: str
) -> None:
    with pytest.raises(DataError, match=pattern):
        stratified_subset(labels_with_counts(*counts), n_per_class=n_per_class, seed=0, class_names=NAMES)


@pytest.mark.parametrize(("cap", "expected"), [(3, [3, 3, 2]), (100, [10, 5, 2]), (None, [10, 5, 2])])
def test_cap_per_class(cap: int | None, expected: list[int]) -> None:
    labels = labels_with_counts(10, 5, 2)
    kept = cap_per_class(labels, max_per_class=cap, seed=0)
    # at most `cap` per class, smaller classes kept whole
    assert np.bincount(labels[kept], minlength=3).tolist() == expected


def test_negative_seed_is_rejected() -> None:
    # numpy seed sequences need non-negative entropy; say so up front
    with pytest.raises(ValueError, match="seed"):
        stratified_subset(np.zeros(3, dtype=int), n_per_class=1, seed=-1, class_names=("a",))
