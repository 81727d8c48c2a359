from __future__ import annotations

import pytest

from benchmarks.timing import Sample, interleaved, paired_ratios, ratio_stats, spread


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([2.0], (2.0, 2.0, 2.0, 2.0, 2.0)),  # one value: every statistic is that value
        ([3.0, 1.0, 2.0], (1.0, 1.5, 2.0, 2.5, 3.0)),  # inclusive quartiles of an odd list
        ([1.0, 2.0, 3.0, 4.0], (1.0, 1.75, 2.5, 3.25, 4.0)),  # median of an even list: the midpoint
    ],
)
def test_spread_gives_extremes_quartiles_and_median(values: list[float], expected: tuple[float, ...]) -> None:
    s = spread(values)
    assert (s.minimum, s.q1, s.median, s.q3, s.maximum) == pytest.approx(expected)
    assert s.n == len(values) and s.as_dict()["median"] == pytest.approx(expected[2])


def test_spread_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        spread([])


def test_paired_ratios_divide_pair_by_pair() -> None:
    # each numerator by the denominator measured next to it, not by a pooled mean
    assert paired_ratios([2.0, 6.0], [1.0, 3.0]) == [2.0, 2.0]
    with pytest.raises(ValueError, match="unpaired"):
        paired_ratios([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="> 0"):
        paired_ratios([1.0], [0.0])


def test_ratio_stats_uses_the_median_of_per_pair_ratios() -> None:
    # pair ratios 1.0, 1.1, 3.0 (one disturbed pair): the median is robust to it
    num = [Sample(1.0, 1.0), Sample(2.2, 2.0), Sample(6.0, 2.0)]
    den = [Sample(1.0, 1.0), Sample(2.0, 2.0), Sample(2.0, 2.0)]
    stats = ratio_stats(num, den)
    assert stats.value == pytest.approx(1.1)
    assert (stats.wall.minimum, stats.wall.maximum) == pytest.approx((1.0, 3.0))
    assert stats.cpu.median == pytest.approx(1.0)  # CPU times agree: the disturbance was elsewhere
    assert stats.fastest == pytest.approx(1.0)  # fastest runs 1.0 and 1.0: the undisturbed pair
    assert stats.as_dict()["value"] == pytest.approx(1.1)


def test_interleaved_rotates_who_goes_first() -> None:
    # two kinds: A B, B A, A B (ABBA balance); three kinds: a rotation per repeat
    assert interleaved(["a", "b"], 3) == [(0, "a"), (0, "b"), (1, "b"), (1, "a"), (2, "a"), (2, "b")]
    order = interleaved(["a", "b", "c"], 3)
    assert [k for _, k in order] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(sum(1 for r, _ in order if r == i) == 3 for i in range(3))  # every kind once per repeat


@pytest.mark.parametrize(("kinds", "repeats"), [([], 3), (["a"], 0), (["a", "a"], 2)])
def test_interleaved_rejects_bad_arguments(kinds: list[str], repeats: int) -> None:
    with pytest.raises(ValueError):
        interleaved(kinds, repeats)
