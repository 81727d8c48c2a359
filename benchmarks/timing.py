"""Pure statistics of paired, interleaved timings: per-pair ratios, medians, spreads.

Every ratio of the benchmark compares two (or three) kinds of run measured in alternation on the
same machine: pair ``i`` runs A then B, pair ``i + 1`` runs B then A, so slow drifts in background
load hit both sides alike. A ratio is the median of the per-pair ratios; the spread (min, max,
quartiles) of those ratios is reported next to it, because a machine shared with other jobs is noisy
and a single number would hide that.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """One timed run.

    Attributes:
        wall_s: Wall-clock seconds (what a user waits for and what device-hours count).
        cpu_s: CPU seconds of this process (user + system, all threads). On a machine shared with
            other jobs this is far less sensitive to their load than wall time, so it is reported
            as a cross-check.
        peak_mb: Peak GPU memory allocated during the run (None on a CPU).
    """

    wall_s: float
    cpu_s: float
    peak_mb: float | None = None


@dataclass(frozen=True)
class Spread:
    """Distribution of a list of values: extremes and quartiles (inclusive method)."""

    minimum: float
    q1: float
    median: float
    q3: float
    maximum: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return {
            "min": self.minimum,
            "q1": self.q1,
            "median": self.median,
            "q3": self.q3,
            "max": self.maximum,
            "n": self.n,
        }


def spread(values: Sequence[float]) -> Spread:
    """Min, quartiles, median and max of ``values`` (one value: all equal to it)."""
    if not values:
        raise ValueError("spread() needs at least one value")
    ordered = sorted(float(v) for v in values)
    if len(ordered) == 1:
        q1 = q3 = ordered[0]
    else:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    return Spread(ordered[0], q1, statistics.median(ordered), q3, ordered[-1], len(ordered))


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """``numerators[i] / denominators[i]`` for each pair; the lists must be equally long."""
    if len(numerators) != len(denominators):
        raise ValueError(f"unpaired samples: {len(numerators)=} != {len(denominators)=}")
    if any(d <= 0 for d in denominators):
        raise ValueError(f"denominators must be > 0, got {list(denominators)}")
    return [n / d for n, d in zip(numerators, denominators, strict=True)]


@dataclass(frozen=True)
class RatioStats:
    """A ratio of two kinds of run, from paired samples."""

    wall: Spread  # per-pair wall-time ratios; ``wall.median`` is the headline value
    cpu: Spread  # per-pair CPU-time ratios (cross-check)
    numerator_wall: Spread
    denominator_wall: Spread
    fastest: float  # fastest numerator run / fastest denominator run (cross-check)

    @property
    def value(self) -> float:
        return self.wall.median

    def as_dict(self) -> dict[str, object]:
        return {
            "value": self.value,
            "wall_ratio": self.wall.as_dict(),
            "cpu_ratio": self.cpu.as_dict(),
            "numerator_wall_s": self.numerator_wall.as_dict(),
            "denominator_wall_s": self.denominator_wall.as_dict(),
            "fastest_run_ratio": self.fastest,
        }


def ratio_stats(numerators: Sequence[Sample], denominators: Sequence[Sample]) -> RatioStats:
    """Median and spread of per-pair ratios, in wall and CPU time, and the ratio of the fastest runs.

    Other jobs can only slow a run down, so on a shared machine the fastest run of each kind is the
    least disturbed one; their ratio is a second, often steadier, estimate of the same quantity.
    """
    num_wall, den_wall = spread([s.wall_s for s in numerators]), spread([s.wall_s for s in denominators])
    return RatioStats(
        wall=spread(paired_ratios([s.wall_s for s in numerators], [s.wall_s for s in denominators])),
        cpu=spread(paired_ratios([s.cpu_s for s in numerators], [s.cpu_s for s in denominators])),
        numerator_wall=num_wall,
        denominator_wall=den_wall,
        fastest=num_wall.minimum / den_wall.minimum,
    )


def interleaved(kinds: Sequence[str], repeats: int) -> list[tuple[int, str]]:
    """The run order ``(repeat, kind)``: each repeat runs every kind once, rotating who goes first.

    With two kinds this is A B, B A, A B, ...; with three, A B C, B C A, C A B, ... so no kind
    always runs right after the same other one (caches, allocator state, thermal drift).
    """
    if repeats < 1 or not kinds:
        raise ValueError(f"need repeats >= 1 and at least one kind, got {repeats=} {list(kinds)=}")
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"kinds must be distinct, got {list(kinds)}")
    order: list[tuple[int, str]] = []
    for repeat in range(repeats):
        shift = repeat % len(kinds)  # with two kinds: A B, B A, A B (the classic ABBA balance)
        order += [(repeat, kind) for kind in [*kinds[shift:], *kinds[:shift]]]
    return order
