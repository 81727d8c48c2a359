from __future__ import annotations

from typing import Any

import pytest

from benchmarks.flops_floor import NAME, SweepWork, floor_ratio, wall_over_floor
from benchmarks.report import RatioResult


def test_ratio_is_wall_over_flops_at_the_measured_throughput() -> None:
    # 1e12 FLOPs at 1e10 FLOP/s: a 100 s floor; sweeps of 300 s and 500 s -> 3 and 5, median 4
    sweeps = [
        SweepWork(wall_s=300.0, cpu_s=290.0, flops=1e12),
        SweepWork(wall_s=500.0, cpu_s=310.0, flops=1e12),
    ]
    result = wall_over_floor(sweeps, 1e10)
    assert result.value == pytest.approx(4.0)
    assert result.cpu is not None and result.cpu.median == pytest.approx(3.0)  # (2.9 + 3.1) / 2
    assert [s["floor_s"] for s in result.details["per_sweep"]] == pytest.approx([100.0, 100.0])
    assert result.passed is None and result.spec.target is None  # no target: a distance, not a verdict


@pytest.mark.parametrize(
    ("sweeps", "throughput", "match"),
    [
        ([], 1.0, "at least one"),
        ([SweepWork(1.0, 1.0, 1.0)], 0.0, "throughput"),
        ([SweepWork(1.0, 1.0, 0.0)], 1.0, "no FLOPs"),
    ],
)
def test_bad_inputs_are_rejected(sweeps: list[SweepWork], throughput: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        wall_over_floor(sweeps, throughput)


def _sweep_result(pruned: tuple[float, float], unpruned: tuple[float, float]) -> RatioResult:
    def side(wall_flops: tuple[float, float]) -> dict[str, Any]:
        return {"wall_s": wall_flops[0], "cpu_s": wall_flops[0], "logged_flops": wall_flops[1]}

    runs = [{"pruned": side(pruned), "unpruned": side(unpruned)}]
    return RatioResult("default_sweep_pruned_over_unpruned", 0.8, details={"runs": runs})


def _eager_result(median: float) -> RatioResult:
    return RatioResult("eager_over_optimised", 2.0, details={"fit_throughput_flop_s": {"median": median}})


def test_floor_ratio_combines_the_pruned_sweeps_with_the_eager_throughput() -> None:
    # pruned: 60 s for 2e9 FLOPs at 1e8 FLOP/s (20 s floor) -> 3; unpruned: 100 s for 4e9 (40 s) -> 2.5
    result = floor_ratio([_eager_result(1e8), _sweep_result((60.0, 2e9), (100.0, 4e9))])
    assert result.name == NAME
    assert result.value == pytest.approx(3.0)
    assert result.details["unpruned_sweeps_ratio"] == pytest.approx(2.5)
    assert result.details["throughput_flop_s"] == pytest.approx(1e8)


def test_floor_ratio_is_null_with_a_reason_when_a_part_is_missing() -> None:
    # the eager step failed: its reason is carried along
    failed = RatioResult("eager_over_optimised", None, reason="measurement failed: boom")
    result = floor_ratio([failed, _sweep_result((60.0, 2e9), (100.0, 4e9))])
    assert (
        result.value is None and "eager_over_optimised" in str(result.reason) and "boom" in str(result.reason)
    )
    # the sweep logged no FLOPs (count_flops=false): null, and the reason says what to switch on
    result = floor_ratio([_eager_result(1e8), _sweep_result((60.0, 0.0), (100.0, 0.0))])
    assert result.value is None and "count_flops=true" in str(result.reason)
    assert floor_ratio([_eager_result(1e8)]).reason is not None  # no sweep at all
