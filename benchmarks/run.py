"""``make bench``: warm up, measure every ratio with interleaved repeats, print the table, write JSON.

Everything runs in one process, in a temporary working directory (the MLflow store of the tracked
runs, the sweep's storage and any artifacts land there, not in the repository). One line is
printed per measurement, so a slow machine shows where the time goes.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.cases import Plan
from benchmarks.eager import eager_ratio
from benchmarks.flops_floor import NAME as FLOOR
from benchmarks.flops_floor import floor_ratio
from benchmarks.loaded import NAMES as LOADED
from benchmarks.loaded import loaded_ratios
from benchmarks.measure import Progress, workdir
from benchmarks.ratios import finetune_ratios, partial_ratio, probe_ratios
from benchmarks.report import RATIOS, RatioResult, bench_json, machine_info, table
from benchmarks.sweep_cost import sweep_ratio
from benchmarks.timing import spread

log = logging.getLogger(__name__)
QUIET = ("tlbench", "lightning", "lightning.pytorch", "optuna", "mlflow", "alembic")
STEPS = ("finetune", "eager", "loaded", "probe", "partial", "sweep")
FLOOR_NEEDS = ("eager", "sweep")  # the steps whose measurements default_sweep_wall_over_flops_floor combines


def _guarded(name: str, fn: Callable[[], list[RatioResult]]) -> list[RatioResult]:
    """A measurement that fails leaves its ratios null with the error as reason; the rest still run."""
    try:
        return fn()
    except Exception as exc:
        log.exception("bench measurement %s failed", name)
        first_line = str(exc).splitlines()[0][:300] if str(exc) else ""
        reason = f"measurement failed: {type(exc).__name__}: {first_line}"
        names = {
            "finetune": ["harness_over_raw_loop", "tracking_on_over_off"],
            "eager": ["eager_over_optimised"],
            "loaded": list(LOADED),
            "probe": ["linear_probe_cached_speedup", "linear_probe_over_one_extraction_pass"],
            "partial": ["partial_cached_speedup"],
            "sweep": ["default_sweep_pruned_over_unpruned"],
            "floor": [FLOOR],
        }[name]
        return [RatioResult(n, None, reason=reason) for n in names]


def run_bench(
    plan: Plan,
    *,
    out: Path | None,
    emit: Callable[[str], None] = print,
    only: Sequence[str] = STEPS,
    keep_workdir: bool = False,
) -> dict[str, Any]:
    """Measure, print the table, write ``out`` (JSON); returns the JSON document."""
    started = time.perf_counter()
    load_start = os.getloadavg()
    threads_before = torch.get_num_threads()
    if plan.threads:
        torch.set_num_threads(plan.threads)
    import mlflow  # noqa: F401 - it configures its loggers on import: quiet them after that

    levels = {name: logging.getLogger(name).level for name in QUIET}
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    progress = Progress(emit)
    threads = plan.threads or "default"
    emit(
        f"make bench: {plan.repeats} interleaved repeats per ratio ({plan.finetune_repeats} for the "
        f"fine-tune trio), up to {plan.sweep.repeats} sweep pairs within {plan.budget_s:.0f} s; "
        f"torch threads {threads}"
        + (f"; every trial case with {' '.join(plan.base_overrides)}" if plan.base_overrides else "")
    )
    results: list[RatioResult] = []
    try:
        with workdir(keep_workdir) as work:
            uri = ""
            if {"finetune", "sweep"} & set(only):  # the steps with tracked runs
                uri, store_s = _create_store(work)
                progress.line(f"MLflow store created (first import included): {store_s:.2f} s")
            steps: dict[str, Callable[[], list[RatioResult]]] = {
                "finetune": lambda: finetune_ratios(plan, uri, progress),
                "eager": lambda: [eager_ratio(plan, progress)],
                "loaded": lambda: loaded_ratios(plan, progress),
                "probe": lambda: probe_ratios(plan, progress),
                "partial": lambda: [partial_ratio(plan, progress)],
                "sweep": lambda: [sweep_ratio(plan, uri, work, progress)],
            }
            for name in only:
                results += _guarded(name, steps[name])
            if set(FLOOR_NEEDS) <= set(only):
                results += _guarded("floor", lambda: [floor_ratio(results)])
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        torch.set_num_threads(threads_before)  # the caller's process is left as it was
    measured = {r.name for r in results}
    results += [
        RatioResult(name, None, reason=_not_measured(name)) for name in list(RATIOS) if name not in measured
    ]
    results.sort(key=lambda r: list(RATIOS).index(r.name))
    wall = time.perf_counter() - started
    extra: dict[str, Any] = {
        "machine": machine_info(plan.threads),
        "load_average": {
            "start": list(load_start),
            "end": list(os.getloadavg()),
            "during_1min": spread(progress.loads).as_dict() if progress.loads else None,
        },
        "wall_s": wall,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "settings": {
            "repeats": plan.repeats,
            "finetune_repeats": plan.finetune_repeats,
            "max_sweep_repeats": plan.sweep.repeats,
            "budget_s": plan.budget_s,
            "threads": plan.threads,
            "overrides": list(plan.base_overrides),
        },
        "method": "ratios are medians of per-pair ratios of interleaved runs (order rotated each repeat) "
        "after one warm-up run of each kind; spreads are over those per-pair ratios; cpu_ratio "
        "uses process CPU time instead of wall time",
    }
    data = bench_json(results, extra)
    emit("")
    emit(table(results))
    loads = spread(progress.loads) if progress.loads else None
    machine = extra["machine"]
    emit(
        f"\nwall time {wall / 60:.1f} min; 1-min load average during the run "
        + (f"{loads.median:.1f} (min {loads.minimum:.1f}, max {loads.maximum:.1f})" if loads else "-")
        + f" on {machine['cpu_model']}, {machine['cpu_cores']} cores"
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2, default=str) + "\n")
        emit(f"wrote {out}")
    return data


def _not_measured(name: str) -> str:
    needs = f": it needs {' and '.join(FLOOR_NEEDS)}" if name == FLOOR else ""
    return f"not measured in this run (--only){needs}"


def _create_store(work: Path) -> tuple[str, float]:
    """A SQLite MLflow store in the work directory, created (and mlflow imported) before any timing."""
    start = time.perf_counter()
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{work / 'mlflow.db'}"
    MlflowClient(uri).search_experiments(max_results=1)
    return uri, time.perf_counter() - start
