from __future__ import annotations

from typing import Any

import pytest

from benchmarks.cases import EAGER, Plan, Run
from benchmarks.eager import eager_result, fit_flops, fit_throughput
from benchmarks.timing import Sample

# a fine-tune trial's logged work: 8 validation passes of 200 images and one test pass of 100
INFO: dict[str, Any] = {
    "train_flops": 600.0,
    "eval_flops": 1_700.0,  # 1,700 images, one forward each: 1 FLOP per image here
    "val_passes": 8,
    "n_val": 200,
    "n_test": 100,
    "fit_seconds": 4.0,
    "test_acc": 0.5,
}


def test_fit_flops_add_the_validation_passes_but_not_the_test_pass() -> None:
    # 1,600 of the 1,700 evaluated images are validation inside the fit: 600 + 1,600
    assert fit_flops(INFO) == pytest.approx(2_200.0)
    assert fit_throughput(INFO) == pytest.approx(550.0)  # per fit second


def test_throughput_needs_logged_flops_and_time() -> None:
    with pytest.raises(ValueError, match="count_flops=true"):
        fit_flops({**INFO, "train_flops": None})
    with pytest.raises(ValueError, match="fit_seconds"):
        fit_throughput({**INFO, "fit_seconds": 0.0})


def _run(wall: float, *, fit_seconds: float) -> Run:
    return Run(Sample(wall_s=wall, cpu_s=wall), {**INFO, "fit_seconds": fit_seconds})


def test_eager_ratio_is_the_median_of_pairs_and_reports_the_optimised_throughput() -> None:
    # pairs 20/10, 18/10, 33/11: per-pair 2.0, 1.8, 3.0 -> median 2.0 (the disturbed pair does not move it)
    eager = [_run(20.0, fit_seconds=8.0), _run(18.0, fit_seconds=8.0), _run(33.0, fit_seconds=9.0)]
    optimised = [_run(10.0, fit_seconds=4.0), _run(10.0, fit_seconds=4.0), _run(11.0, fit_seconds=5.5)]
    result = eager_result(eager, optimised, config={})
    assert result.value == pytest.approx(2.0)
    assert (result.wall.minimum, result.wall.maximum) == pytest.approx((1.8, 3.0))  # type: ignore[union-attr]
    assert result.passed is True  # target >= 1.8
    throughput = result.details["fit_throughput_flop_s"]
    # 2,200 fit FLOPs over 4, 4 and 5.5 s; only the optimised runs count
    assert throughput["per_run"] == pytest.approx([550.0, 550.0, 400.0])
    assert throughput["median"] == pytest.approx(550.0)
    assert result.details["fit_seconds_ratio"]["median"] == pytest.approx(2.0)
    assert result.details["config"]["eager_overrides"] == list(EAGER)


def test_eager_overrides_come_after_the_defaults_so_they_win() -> None:
    # the eager trial is the fine-tune trial with the old settings appended (Hydra: the last value wins)
    plan = Plan()
    runs = plan.overrides("finetune", *EAGER)
    assert runs[: len(plan.finetune)] == list(plan.finetune)
    assert runs[-len(EAGER) :] == list(EAGER)
    assert "trainer.channels_last=false" in EAGER
