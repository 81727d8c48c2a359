"""``trial_loaded_over_alone`` and ``cost_loaded_over_alone``: one trial alone, and beside a competing load.

On a CPU that another process also uses, OpenMP threads that spin while they wait for each other are
descheduled in turn: a training step ran 3.3x slower (issue 18). And a cost read off the wall clock
follows the neighbours: identical trials were logged at 0.087 and 0.003 device-hours. Both are
measured here, side by side:

* the trial runs with one torch thread per usable core (what a user's trial does by default, and where
  spinning hurts; the bench's one-thread rule is for the other ratios);
* the competing load is one busy-loop child process per usable core, started before the loaded run's
  clock and stopped after it (:func:`competing_load`); the alone runs have none;
* the two kinds alternate (alone, loaded, loaded, alone, ...), each pair seconds apart.

With N trial threads beside N busy processes on N cores, fair sharing gives the trial half the machine:
the ideal ``trial_loaded_over_alone`` is 2 (target <= 2.3). ``cost_loaded_over_alone`` is the ratio of
the ``cost/device_hours`` the two runs logged: a cost that counts the trial's own compute stays put
(target 0.8-1.25); one that counts the wall clock doubles with it.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from benchmarks import cases
from benchmarks.cases import UNTRACKED, Plan, Run
from benchmarks.measure import Progress, measure, paired_ratio, runs_detail
from benchmarks.report import RatioResult
from benchmarks.timing import paired_ratios, spread
from tlbench.training.threads import usable_cores

# One busy loop: says when it spins, then never yields the core by itself.
_BUSY = "import sys\nsys.stdout.write('spinning\\n')\nsys.stdout.flush()\nwhile True:\n    pass\n"
NAMES = ("trial_loaded_over_alone", "cost_loaded_over_alone")


@contextlib.contextmanager
def competing_load(processes: int) -> Iterator[list[int]]:
    """``processes`` CPU-bound child processes for the duration of the block; yields their pids.

    Each child reports once it is spinning, so the block starts under full load; all are killed and
    reaped on the way out, whatever happened inside.
    """
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes=}")
    children: list[subprocess.Popen[str]] = []
    try:
        for _ in range(processes):
            children.append(
                subprocess.Popen(
                    [sys.executable, "-c", _BUSY], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
                )
            )
        for child in children:
            if child.stdout is None or child.stdout.readline().strip() != "spinning":
                raise RuntimeError(f"competing load process {child.pid} did not start")
        yield [child.pid for child in children]
    finally:
        for child in children:
            child.kill()
        for child in children:
            child.wait()
            if child.stdout is not None:
                child.stdout.close()


def loaded_ratios(plan: Plan, progress: Progress) -> list[RatioResult]:
    """Both ratios from interleaved alone / loaded runs of the fine-tune trial."""
    cores = usable_cores()
    overrides = plan.overrides("finetune", *UNTRACKED, f"trainer.num_threads={cores}")
    threads_before = torch.get_num_threads()

    def loaded() -> Run:
        with competing_load(cores):
            return cases.harness_run(overrides)

    try:
        warm = plan.overrides("finetune", *UNTRACKED, f"trainer.num_threads={cores}", warmup=True)
        progress.run("warm-up loaded-pair alone", cases.harness_run(warm))
        runs = measure(
            {"alone": lambda: cases.harness_run(overrides), "loaded": loaded}, plan.repeats, progress, "load"
        )
    finally:
        torch.set_num_threads(threads_before)  # the trial set its own count: the other steps keep theirs
    return loaded_result(
        runs["alone"],
        runs["loaded"],
        config={"overrides": overrides, "torch_threads": cores, "competing_processes": cores},
    )


def loaded_result(
    alone: Sequence[Run], loaded: Sequence[Run], *, config: Mapping[str, Any]
) -> list[RatioResult]:
    """The two ratios from measured runs (pure: tests pass fake ones).

    Raises:
        ValueError: A run logged no ``cost/device_hours``.
    """
    hours_alone, hours_loaded = _hours(alone), _hours(loaded)
    per_pair = paired_ratios(hours_loaded, hours_alone)
    cost = spread(per_pair)
    rules = sorted({str(r.info.get("device_hours_rule") or "untagged") for r in [*alone, *loaded]})
    fit_ratio = [
        float(b.info["fit_seconds"]) / float(a.info["fit_seconds"])
        for a, b in zip(alone, loaded, strict=True)
    ]
    detail = {"config": dict(config), "runs": runs_detail({"alone": list(alone), "loaded": list(loaded)})}
    return [
        paired_ratio(
            "trial_loaded_over_alone",
            loaded,
            alone,
            ideal=2.0,  # N trial threads beside N busy processes on N cores: half the machine
            fit_seconds_ratio=spread(fit_ratio).as_dict(),
            **detail,
        ),
        RatioResult(
            "cost_loaded_over_alone",
            cost.median,
            wall=cost,  # the per-pair ratios of the logged device-hours, not of wall times
            details={
                "per_pair": per_pair,
                "device_hours_alone": hours_alone,
                "device_hours_loaded": hours_loaded,
                "device_hours_rule": rules,  # as the trials tagged it: which rule this run measured
                **detail,
            },
        ),
    ]


def _hours(runs: Sequence[Run]) -> list[float]:
    hours = [r.info.get("device_hours") for r in runs]
    if any(h is None for h in hours):
        raise ValueError("a run logged no cost/device_hours")
    return [float(h) for h in hours if h is not None]
