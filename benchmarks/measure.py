"""Measuring helpers: progress lines, interleaved repeats, the temporary working directory, threads.

Kept apart from what is measured (:mod:`benchmarks.ratios`) so the mechanics can be reused and read
on their own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.cases import Run
from benchmarks.report import RatioResult
from benchmarks.timing import Sample, interleaved, ratio_stats, spread


class Progress:
    """One line per measurement: elapsed time, 1-minute load average, what ran and how long it took."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit
        self.start = time.perf_counter()
        self.loads: list[float] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def line(self, text: str) -> None:
        load = os.getloadavg()[0]
        self.loads.append(load)
        self.emit(f"[{time.perf_counter() - self.start:6.1f} s | load {load:4.1f}] {text}")

    def run(self, label: str, run: Run) -> None:
        s = run.sample
        accuracy = run.info.get("test_acc")
        extra = f"  test/acc {accuracy:.4f}" if isinstance(accuracy, float) else ""
        cache = run.info.get("feature_cache")
        extra += f"  features {cache}" if cache else ""
        self.line(f"{label:<36} wall {s.wall_s:7.2f} s  cpu {s.cpu_s:7.2f} s{extra}")


def auto_threads(requested: int | None) -> int | None:
    """``requested``; else one thread on a CPU-only machine, torch's default when a GPU trains.

    A CPU benchmark measured while other jobs share the cores must not use several OpenMP threads:
    threads spin-waiting for each other are descheduled in turn and a run's time (wall *and* CPU)
    becomes erratic; here a 4-epoch fine-tune took 3 s of CPU with one thread and 20-80 s with two
    once the load rose past the core count mid-run. The load cannot be predicted for the whole
    run, so one thread is the default; pass ``--threads N`` on a dedicated machine.
    """
    if requested:
        return requested
    import torch

    return None if torch.cuda.is_available() else 1


@contextlib.contextmanager
def workdir(keep: bool = False) -> Iterator[Path]:
    """A temporary working directory for the whole run (restores the current one afterwards)."""
    previous = Path.cwd()
    path = Path(tempfile.mkdtemp(prefix="tlbench-bench-"))
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(previous)
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def measure(
    kinds: Mapping[str, Callable[[], Run]], repeats: int, progress: Progress, label: str
) -> dict[str, list[Run]]:
    """Run every kind ``repeats`` times in rotating order; runs[kind][i] belongs to repeat i."""
    runs: dict[str, list[Run]] = {kind: [] for kind in kinds}
    for repeat, kind in interleaved(list(kinds), repeats):
        run = kinds[kind]()
        runs[kind].append(run)
        progress.run(f"{label} {repeat + 1}/{repeats} {kind}", run)
    return runs


def samples(runs: Sequence[Run]) -> list[Sample]:
    return [r.sample for r in runs]


def runs_detail(runs: Mapping[str, Sequence[Run]]) -> dict[str, Any]:
    """Every run's times (and peak GPU memory on a GPU) and what it produced, per kind."""

    def one(run: Run) -> dict[str, Any]:
        memory = {"peak_gpu_mb": run.sample.peak_mb} if run.sample.peak_mb is not None else {}
        return {"wall_s": run.sample.wall_s, "cpu_s": run.sample.cpu_s, **memory, **run.info}

    return {kind: [one(r) for r in group] for kind, group in runs.items()}


def paired_ratio(
    name: str, numerators: Sequence[Run], denominators: Sequence[Run], **details: Any
) -> RatioResult:
    stats = ratio_stats(samples(numerators), samples(denominators))
    return RatioResult(
        name, stats.value, wall=stats.wall, cpu=stats.cpu, fastest=stats.fastest, details=details
    )


def median(values: Sequence[float]) -> float:
    return spread(values).median
