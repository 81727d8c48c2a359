from __future__ import annotations

import itertools
import math

import pytest

from tlbench.config.schema import ScheduleConfig, ScheduleName
from tlbench.training.fit import lr_factor

TOTAL = 100


def _curve(cfg: ScheduleConfig) -> list[float]:
    return [lr_factor(step, TOTAL, cfg) for step in range(TOTAL)]


def test_constant_is_flat() -> None:
    # constant: factor 1 everywhere
    assert set(_curve(ScheduleConfig(name=ScheduleName.constant))) == {1.0}


def test_step_drops_at_milestones() -> None:
    # step: gamma applied once per milestone passed
    cfg = ScheduleConfig(name=ScheduleName.step, milestones=[0.5, 0.75], gamma=0.1)
    curve = _curve(cfg)
    assert curve[49] == 1.0 and curve[50] == pytest.approx(0.1) and curve[75] == pytest.approx(0.01)


def test_cosine_decays_monotonically_to_floor() -> None:
    # cosine: starts at 1, never increases, ends near min_factor
    curve = _curve(ScheduleConfig(name=ScheduleName.cosine, min_factor=0.1))
    assert curve[0] == 1.0
    assert all(a >= b for a, b in itertools.pairwise(curve))
    assert curve[-1] == pytest.approx(0.1, abs=0.01)


def test_warmup_cosine_rises_then_decays() -> None:
    # warmup_cosine: linear rise over warmup_fraction, peak 1, then cosine decay
    curve = _curve(ScheduleConfig(name=ScheduleName.warmup_cosine, warmup_fraction=0.1))
    assert curve[0] == pytest.approx(0.1)
    assert curve[9] == pytest.approx(1.0)
    assert max(curve) == pytest.approx(1.0)
    assert curve[-1] < 0.01


def test_onecycle_matches_its_definition() -> None:
    # onecycle: 1/div_factor -> 1 at pct_start -> 1/(div*final_div)
    cfg = ScheduleConfig(name=ScheduleName.onecycle, pct_start=0.3, div_factor=25.0, final_div_factor=1e4)
    curve = _curve(cfg)
    assert curve[0] == pytest.approx(1 / 25)
    assert curve[30] == pytest.approx(1.0)
    assert lr_factor(TOTAL, TOTAL, cfg) == pytest.approx(1 / 25 / 1e4)
    assert all(math.isfinite(v) and v > 0 for v in curve)


def test_invalid_total_steps() -> None:
    # zero steps is a programming error with the value named
    with pytest.raises(ValueError, match="total_steps"):
        lr_factor(0, 0, ScheduleConfig())
