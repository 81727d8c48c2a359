"""``default_sweep_wall_over_flops_floor``: how far the default sweep is from the machine's limit.

The floor is the time the sweep's work would take at the training throughput measured in the same
bench run: the FLOPs its trials logged (``cost/train_flops`` + ``cost/eval_flops``, pruned and
failed trials included) ÷ the fit-phase FLOP/s of the optimised fine-tune trial
(:func:`benchmarks.eager.fit_throughput`). The ratio is the sweep command's wall time ÷ that floor:
1 would be a sweep that does nothing but its counted work at that speed; everything else (process
start, data, model construction, FLOP profiles, tracking, the optimizer's and Optuna's bookkeeping,
work at a lower FLOP/s than a fine-tune step) puts it above. There is no target.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.report import RatioResult
from benchmarks.timing import spread

NAME = "default_sweep_wall_over_flops_floor"
EAGER, SWEEP = "eager_over_optimised", "default_sweep_pruned_over_unpruned"


@dataclass(frozen=True)
class SweepWork:
    """One timed sweep command and the FLOPs its trials logged."""

    wall_s: float
    cpu_s: float
    flops: float


def wall_over_floor(sweeps: Sequence[SweepWork], throughput_flop_s: float, **details: Any) -> RatioResult:
    """Median over sweeps of wall / (flops / throughput); the CPU-time column uses the CPU seconds.

    Raises:
        ValueError: No sweep, a throughput <= 0, or a sweep that logged no FLOPs.
    """
    if not sweeps:
        raise ValueError("need at least one sweep")
    if throughput_flop_s <= 0:
        raise ValueError(f"throughput must be > 0 FLOP/s, got {throughput_flop_s}")
    if any(s.flops <= 0 for s in sweeps):
        raise ValueError("a sweep logged no FLOPs: its trials need trainer.count_flops=true")
    floors = [s.flops / throughput_flop_s for s in sweeps]
    wall = spread([s.wall_s / f for s, f in zip(sweeps, floors, strict=True)])
    cpu = spread([s.cpu_s / f for s, f in zip(sweeps, floors, strict=True)])
    return RatioResult(
        NAME,
        wall.median,
        wall=wall,
        cpu=cpu,
        details={
            "throughput_flop_s": throughput_flop_s,
            "per_sweep": [
                {"wall_s": s.wall_s, "cpu_s": s.cpu_s, "logged_flops": s.flops, "floor_s": f}
                for s, f in zip(sweeps, floors, strict=True)
            ],
            **details,
        },
    )


def floor_ratio(results: Sequence[RatioResult]) -> RatioResult:
    """The ratio from the eager and sweep steps' results; null with the reason if one is missing."""
    by_name: Mapping[str, RatioResult] = {r.name: r for r in results}
    eager, sweep = by_name.get(EAGER), by_name.get(SWEEP)
    for needed, result in ((EAGER, eager), (SWEEP, sweep)):
        if result is None or result.value is None:
            why = f": {result.reason}" if result is not None and result.reason else ""
            return RatioResult(NAME, None, reason=f"needs {needed}, not measured in this run{why}")
    assert eager is not None and sweep is not None  # for mypy: both checked above
    throughput = float(eager.details["fit_throughput_flop_s"]["median"])
    sweeps = [
        SweepWork(run["pruned"]["wall_s"], run["pruned"]["cpu_s"], run["pruned"]["logged_flops"])
        for run in sweep.details["runs"]
    ]
    unpruned = [
        SweepWork(run["unpruned"]["wall_s"], run["unpruned"]["cpu_s"], run["unpruned"]["logged_flops"])
        for run in sweep.details["runs"]
    ]
    try:
        cross_check = wall_over_floor(unpruned, throughput).value
        return wall_over_floor(
            sweeps,
            throughput,
            sweep=f"the pruned sweeps of {SWEEP} (the default sweep as its file is)",
            throughput_source=f"{EAGER}: median fit throughput of its optimised runs",
            unpruned_sweeps_ratio=cross_check,
        )
    except ValueError as exc:
        return RatioResult(NAME, None, reason=str(exc))
