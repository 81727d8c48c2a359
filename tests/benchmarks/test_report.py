from __future__ import annotations

import json

import pytest

from benchmarks.report import RATIOS, RatioResult, Target, bench_json, check_bench_json, table
from benchmarks.timing import spread

EXTRA = {"machine": {"cpu_model": "x", "cpu_cores": 2}, "load_average": {"start": [1.0]}, "wall_s": 1.0}


def _results(value: float | None = 1.0) -> list[RatioResult]:
    out = []
    for name in RATIOS:
        if value is None:
            out.append(RatioResult(name, None, reason="not measured"))
        else:
            out.append(RatioResult(name, value, wall=spread([value]), cpu=spread([value])))
    return out


@pytest.mark.parametrize(
    ("target", "value", "met"),
    [
        (Target("<=", 1.05), 1.05, True),
        (Target("<=", 1.05), 1.06, False),
        (Target(">=", 8.0), 7.9, False),
        (Target("in", 0.8, 1.25), 0.8, True),  # a range includes both ends
        (Target("in", 0.8, 1.25), 1.25, True),
        (Target("in", 0.8, 1.25), 0.79, False),  # below it
        (Target("in", 0.8, 1.25), 1.3, False),  # above it
    ],
)
def test_targets_compare_in_their_direction(target: Target, value: float, met: bool) -> None:
    assert target.met(value) is met


@pytest.mark.parametrize(
    "args",
    [
        ("<", 1.0),
        ("in", 1.0),
        ("<=", 1.0, 2.0),
        ("in", 2.0, 1.0),
    ],  # unknown op; a range needs both ends, in order
)
def test_a_target_needs_a_known_operator_and_a_valid_range(args: tuple[str, float]) -> None:
    with pytest.raises(ValueError, match="op"):
        Target(*args)


def test_a_range_target_prints_its_ends() -> None:
    assert str(Target("in", 0.8, 1.25)) == "0.8..1.25"


def test_pass_needs_a_value_a_target_and_the_side_condition() -> None:
    assert RatioResult("harness_over_raw_loop", 1.0).passed is True
    assert RatioResult("harness_over_raw_loop", None, reason="x").passed is None  # not measured
    assert RatioResult("partial_cached_speedup", 3.0).passed is None  # no target
    # the sweep's compute saving does not count if the accuracy it found dropped by > 1 point
    assert RatioResult("default_sweep_pruned_over_unpruned", 0.3, accuracy_ok=False).passed is False
    assert RatioResult("default_sweep_pruned_over_unpruned", 0.3, accuracy_ok=True).passed is True


def test_bench_json_has_the_documented_shape_and_is_serialisable() -> None:
    data = bench_json(_results(), EXTRA)
    check_bench_json(data)
    assert set(data["ratios"]) == set(RATIOS)
    assert data["details"]["harness_over_raw_loop"]["wall_ratio"]["median"] == 1.0
    assert data["details"]["harness_over_raw_loop"]["definition"]  # every ratio says what it times
    json.dumps(data)


def test_null_ratios_need_a_reason() -> None:
    data = bench_json(_results(None), EXTRA)
    check_bench_json(data)  # null with a reason is valid
    del data["details"]["tracking_on_over_off"]["reason"]
    with pytest.raises(ValueError, match="without a reason"):
        check_bench_json(data)


@pytest.mark.parametrize("drop", ["ratios", "machine", "harness_over_raw_loop"])
def test_incomplete_bench_json_is_rejected(drop: str) -> None:
    data = bench_json(_results(), EXTRA)
    if drop == "ratios":
        del data["ratios"]
    elif drop == "machine":
        del data["details"]["machine"]
    else:
        del data["ratios"][drop]
    with pytest.raises(ValueError):
        check_bench_json(data)


def test_table_lists_every_ratio_with_target_verdict_and_notes() -> None:
    results = _results()
    results[-1] = RatioResult(results[-1].name, None, reason="the sweep driver is missing")
    text = table(results)
    assert all(name in text for name in RATIOS)
    assert "<= 1.05" in text and "PASS" in text and "FAIL" in text  # 1.0 < 8 fails the probe target
    assert "notes:" in text and "the sweep driver is missing" in text
