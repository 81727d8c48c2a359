"""``eager_over_optimised``: the fine-tune trial with the old eager settings ÷ with today's defaults.

The optimised runs also give the bench its training throughput, the FLOP/s of their fit phase,
which ``default_sweep_wall_over_flops_floor`` divides by (:mod:`benchmarks.flops_floor`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from benchmarks import cases
from benchmarks.cases import EAGER, Plan, Run
from benchmarks.measure import Progress, measure, paired_ratio, runs_detail
from benchmarks.report import RatioResult
from benchmarks.timing import spread

COUNTED = ("trainer.count_flops=true",)  # both sides log their FLOPs (the profile is memoised)
THROUGHPUT = (
    "FLOPs of the fit phase / cost/fit_seconds of the optimised runs: cost/train_flops plus the "
    "validation passes' share of cost/eval_flops (val_passes*n_val of the val_passes*n_val + n_test "
    "evaluated images, one forward each)"
)


def fit_flops(info: Mapping[str, Any]) -> float:
    """FLOPs a trial logged for its fit phase: training plus the validation passes inside it.

    ``cost/eval_flops`` counts one forward per evaluated image, validation passes and the test pass
    alike; the test pass runs after the fit, so only the validation images' share belongs to it.

    Raises:
        ValueError: The trial logged no FLOPs (run with ``trainer.count_flops=true``).
    """
    train, evaluated = info.get("train_flops"), info.get("eval_flops")
    if train is None or evaluated is None:
        raise ValueError("the trial logged no FLOPs: run it with trainer.count_flops=true")
    val_images = float(info["val_passes"]) * float(info["n_val"])
    eval_images = val_images + float(info["n_test"])
    return float(train) + (float(evaluated) * val_images / eval_images if eval_images else 0.0)


def fit_throughput(info: Mapping[str, Any]) -> float:
    """FLOP/s of a trial's fit phase: :func:`fit_flops` / ``cost/fit_seconds``."""
    seconds = float(info["fit_seconds"])
    if seconds <= 0:
        raise ValueError(f"fit_seconds must be > 0, got {seconds}")
    return fit_flops(info) / seconds


def eager_ratio(plan: Plan, progress: Progress) -> RatioResult:
    """eager_over_optimised from interleaved pairs, with the optimised runs' fit throughput."""
    optimised = plan.overrides("finetune", *COUNTED)
    eager = plan.overrides("finetune", *COUNTED, *EAGER)
    progress.run(
        "warm-up eager", cases.harness_run(plan.overrides("finetune", *COUNTED, *EAGER, warmup=True))
    )
    progress.run("warm-up optimised", cases.harness_run(plan.overrides("finetune", *COUNTED, warmup=True)))
    kinds = {"eager": lambda: cases.harness_run(eager), "optimised": lambda: cases.harness_run(optimised)}
    runs = measure(kinds, plan.repeats, progress, "eager")
    return eager_result(runs["eager"], runs["optimised"], config={"optimised": optimised, "eager": eager})


def eager_result(eager: list[Run], optimised: list[Run], *, config: Mapping[str, Any]) -> RatioResult:
    """The ratio and its cross-checks from measured runs (pure: tests pass fake ones)."""
    throughput = [fit_throughput(r.info) for r in optimised]
    fit_ratio = [
        float(e.info["fit_seconds"]) / float(o.info["fit_seconds"])
        for e, o in zip(eager, optimised, strict=True)
    ]
    return paired_ratio(
        "eager_over_optimised",
        eager,
        optimised,
        config={**config, "eager_overrides": list(EAGER)},
        same_work={
            "eager_train_flops": eager[0].info["train_flops"],
            "optimised_train_flops": optimised[0].info["train_flops"],
            "eager_test_acc": [r.info["test_acc"] for r in eager],
            "optimised_test_acc": [r.info["test_acc"] for r in optimised],
        },
        fit_seconds_ratio=spread(fit_ratio).as_dict(),
        fit_throughput_flop_s={
            "definition": THROUGHPUT,
            "per_run": throughput,
            **spread(throughput).as_dict(),
        },
        runs=runs_detail({"eager": eager, "optimised": optimised}),
    )
