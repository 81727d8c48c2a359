"""The plan's device time, from a short measured throughput probe, and an ETA that counts down.

Before the first trial the supervisor times a few training steps (and evaluation batches) of the
study's own backbone at its resolution and batch size, in process CPU seconds over the threads used
(the cost rule of ``cost/device_hours``, so another process's load does not inflate it; wall seconds
on a GPU). Each planned trial's device time is then its images through the network: training steps
x batch (the step budget is a maximum under early stopping, so this is an upper bound), evaluation
passes over validation and test, and, for the linear probe, one extraction pass.

While the study runs, the ETA scales those estimates by how long finished trials actually took
against their estimates (the load and the estimate's error both show up there), and subtracts the
time running trials have already spent, so it counts down between trial ends. Each ETA is logged
with its time (``eta.jsonl`` in the study's log folder); :func:`eta_errors` reads a finished
study's log back and says how far off the ETA was at 25, 50 and 75 % of its wall time.
"""

from __future__ import annotations

import datetime
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from tlbench.errors import ConfigError
from tlbench.sweep import protocol as P
from tlbench.sweep.cells import tuning_budget
from tlbench.sweep.plan import CellFacts, Graph, SweepPlan
from tlbench.sweep.progress import NOT_RUN
from tlbench.sweep.progress import trial_seconds as trial_seconds_of
from tlbench.sweep.spec import SIZE_FACTOR, SweepSpec, sweep_error

ETA_LOG = "eta.jsonl"
# Seconds of a trial outside its images: config, model build, MLflow run, tracking writes (measured: trial
# wall minus fit seconds, 3.6 s per trial over a 22-trial synthetic study on the loaded 2-core machine).
TRIAL_OVERHEAD_S = 3.0
PROBE_FRACTION = {  # share of a full training step a strategy's step costs (frozen parts: forward only)
    "partial": 0.7,  # a cached frozen prefix: only the suffix trains (half depth at most here)
}


@dataclass(frozen=True)
class Throughput:
    """Device seconds per image: one training image (forward, backward, step) and one evaluated image."""

    train_s: float
    eval_s: float
    what: str  # what was measured, for the plan's header

    def describe(self) -> str:
        return (
            f"{self.train_s:.3f} s per training image, {self.eval_s:.4f} s per evaluated image ({self.what})"
        )


def measure_throughputs(plan: SweepPlan, *, num_classes: int, threads: int) -> dict[Graph, Throughput]:
    """One probe per distinct (backbone, resolution, batch size) among the cells; strategies share it."""
    from tlbench.models.network import pretrained_input_size

    measured: dict[tuple[str, int, int], Throughput] = {}
    out = {}
    for facts in plan.facts.values():
        backbone, resolution, batch = facts.graph[0], facts.graph[1], facts.graph[2]
        side = int(resolution) if resolution.isdigit() else pretrained_input_size(backbone)
        key = (backbone, side, batch)
        if key not in measured:
            measured[key] = measure_throughput(
                backbone, resolution=side, batch_size=batch, num_classes=num_classes, threads=threads
            )
        out[facts.graph] = measured[key]
    return out


def measure_throughput(
    backbone: str, *, resolution: int, batch_size: int, num_classes: int, threads: int, steps: int = 3
) -> Throughput:
    """Time ``steps`` training steps and as many evaluation batches of a randomly initialised backbone.

    Random weights cost the same as pretrained ones; channels_last as the trials use it on a CNN.
    """
    import timm
    import torch

    torch.set_num_threads(threads)
    model = timm.create_model(backbone, pretrained=False, num_classes=num_classes)
    images = torch.randn(batch_size, 3, resolution, resolution)
    labels = torch.randint(0, num_classes, (batch_size,))
    if any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    def eval_step() -> None:
        with torch.inference_mode():
            model(images)

    model.train()
    train_step()  # warm-up: first-call allocations and kernel selection
    train = _cpu_seconds(train_step, steps) / threads
    model.eval()
    eval_step()
    evaluate = _cpu_seconds(eval_step, steps) / threads
    what = f"{backbone} at {resolution} px, batch {batch_size}, {threads} thread(s), CPU seconds / threads"
    return Throughput(train / (steps * batch_size), evaluate / (steps * batch_size), what)


def _cpu_seconds(step: Any, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        step()
    return time.process_time() - start


def data_counts(spec: SweepSpec) -> DataCounts:
    """Split sizes of the sweep's dataset (base and command-line overrides): decodes it once.

    Decoded data is cached in the process, so the trials a single worker then runs reuse it.
    """
    from tlbench.config import load_config
    from tlbench.data import load_splits
    from tlbench.training.prepare import resolve_defaults

    try:
        cfg = resolve_defaults(load_config([*spec.base, *spec.overrides, "data.n_per_class=null"]))
    except ConfigError as exc:
        raise sweep_error(spec.name, f"base and command-line overrides: {exc}") from None
    splits = load_splits(cfg.data, seed=spec.tune_seed)
    pool = splits.train.labels.bincount(minlength=splits.num_classes)
    return DataCounts(
        tuple(int(c) for c in pool), len(splits.val), len(splits.test), cfg.data.root or cfg.data.name.value
    )


@dataclass(frozen=True)
class DataCounts:
    """Images per split, as the sweep's data gives them (the validation and test splits never change)."""

    pool_per_class: tuple[int, ...]  # training pool, per class
    val: int
    test: int
    where: str = ""  # the dataset: its folder or name

    def train_images(self, n_per_class: int | None) -> int:
        if n_per_class is None:
            return sum(self.pool_per_class)
        return sum(min(n_per_class, c) for c in self.pool_per_class)


def trial_seconds(facts: CellFacts, counts: DataCounts, n_per_class: int | None, tp: Throughput) -> float:
    """Estimated device seconds of one trial of a cell (an upper bound under early stopping)."""
    n_train = counts.train_images(n_per_class)
    evaluate = TRIAL_OVERHEAD_S + (counts.val + counts.test) * tp.eval_s
    if not facts.trains_by_steps and facts.strategy == "as_is":
        return evaluate
    extract = (n_train + counts.val + counts.test) * tp.eval_s if facts.probe_first else 0.0
    if not facts.trains_by_steps:  # the L-BFGS probe: one extraction, then a fit on features (seconds)
        return TRIAL_OVERHEAD_S + extract
    steps_per_epoch = max(1, math.ceil(n_train / facts.batch_size))
    steps = max(facts.epochs * steps_per_epoch, facts.min_steps or 0)
    epochs = math.ceil(steps / steps_per_epoch)
    checks = min(facts.val_checks or epochs, epochs)
    train = steps * facts.batch_size * tp.train_s * PROBE_FRACTION.get(facts.strategy, 1.0)
    return extract + train + checks * counts.val * tp.eval_s + evaluate


@dataclass(frozen=True)
class WorkItem:
    """A planned trial (or several alike): its phase, cell and estimated device seconds each."""

    phase: str
    cell: str
    count: int
    seconds: float


def plan_seconds(items: Iterable[WorkItem]) -> float:
    return sum(item.count * item.seconds for item in items)


def work_items(
    spec: SweepSpec, plan: SweepPlan, counts: DataCounts, throughput: Mapping[Graph, Throughput]
) -> list[WorkItem]:
    """Every planned trial (racing finals: the first round) with its estimated device seconds."""
    items = []
    checked = {c.key for c in plan.check_cells}
    factor = spec.budget.check.factor if spec.budget.check is not None else 1
    for cell in plan.cells:
        facts = plan.facts[cell.key]
        size = cell.get(SIZE_FACTOR)
        n = size if isinstance(size, int) and not isinstance(size, bool) else None
        seconds = trial_seconds(facts, counts, n, throughput[facts.graph])
        if spec.mode == "pareto":
            items.append(WorkItem("pareto", cell.key, spec.budget.trials_per_cell, seconds))
            continue
        items.append(WorkItem("tune", cell.key, tuning_budget(spec, cell), seconds))
        if cell.key in checked:
            items.append(WorkItem("check", cell.key, 1, seconds * factor))
        if spec.has_finals:
            items.append(WorkItem("final", cell.key, len(spec.final_seeds), seconds))
    return items


def trial_states(
    trials_by_phase: Mapping[str, Sequence[FrozenTrial]], *, now: datetime.datetime
) -> tuple[list[Finished], list[Running]]:
    """Finished trials (wall seconds, claim to result) and running ones (seconds so far) by phase and
    cell; enqueued ones (a racing round's finals, not claimed yet) count as running for 0 s."""
    finished, running = [], []
    for phase, trials in trials_by_phase.items():
        for t in trials:
            cell = str(t.user_attrs.get(P.CELL, ""))
            if t.state == TrialState.WAITING:
                running.append(Running(phase, cell, 0.0, waiting=True))
                continue
            if P.fail_kind(t) in NOT_RUN or t.datetime_start is None:
                continue
            if t.state == TrialState.RUNNING:
                running.append(Running(phase, cell, (now - t.datetime_start).total_seconds()))
            elif (wall := trial_seconds_of(t)) is not None and P.is_counted(t):
                finished.append(Finished(phase, cell, wall))
    return finished, running


@dataclass(frozen=True)
class Finished:
    phase: str
    cell: str
    wall_s: float


@dataclass(frozen=True)
class Running:
    phase: str
    cell: str
    elapsed_s: float
    waiting: bool = False  # enqueued, not claimed yet


def countdown(
    items: Sequence[WorkItem],
    finished: Sequence[Finished],
    running: Sequence[Running],
    *,
    workers: int,
) -> float:
    """Seconds left: the remaining planned trials' estimates, scaled by how long finished trials took
    against theirs, less what running trials have already spent, shared by the workers."""
    estimate = {(i.phase, i.cell): i.seconds for i in items}
    known = [(f.wall_s, estimate[(f.phase, f.cell)]) for f in finished if (f.phase, f.cell) in estimate]
    spent, expected = sum(w for w, _ in known), sum(e for _, e in known)
    scale = spent / expected if expected > 0 and spent > 0 else 1.0
    started: dict[tuple[str, str], int] = {}
    keys = [(f.phase, f.cell) for f in finished] + [(r.phase, r.cell) for r in running]
    for key in keys:  # running includes enqueued trials: a racing round adds finals
        started[key] = started.get(key, 0) + 1
    left = sum(max(0, i.count - started.get((i.phase, i.cell), 0)) * i.seconds for i in items) * scale
    in_flight = sum(max(0.0, estimate.get((r.phase, r.cell), 0.0) * scale - r.elapsed_s) for r in running)
    return (left + in_flight) / max(1, workers)


def log_eta(
    path: Path, *, elapsed_s: float, eta_s: float | None, done: int, planned: int, final: bool = False
) -> None:
    """Append one ETA estimate with its wall-clock time (the study's ``eta.jsonl``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"time": time.time(), "elapsed_s": round(elapsed_s, 1), "eta_s": eta_s, "done": done,
              "planned": planned, "final": final}  # fmt: skip
    with path.open("a") as out:
        out.write(json.dumps(record) + "\n")


def eta_errors(
    path: Path, *, fractions: Sequence[float] = (0.25, 0.5, 0.75)
) -> dict[float, dict[str, float]]:
    """How far off the ETA was at each fraction of a finished study's wall time.

    The study's end is the ``final`` record (written when the command ends); for each fraction, the
    estimate logged nearest that moment is compared with the time that really remained: ``error_s``
    = predicted - actual remaining seconds (positive: too pessimistic), and ``relative`` = error /
    actual remaining.
    """
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    end = next((r for r in reversed(records) if r.get("final")), None)
    if end is None:
        raise ValueError(f"{path} has no final record: the study's command has not ended yet")
    start_time = end["time"] - end["elapsed_s"]
    total = end["time"] - start_time
    out: dict[float, dict[str, float]] = {}
    estimates = [r for r in records if not r.get("final") and r.get("eta_s") is not None]
    for fraction in fractions:
        moment = start_time + fraction * total
        if not estimates:
            break
        nearest = min(estimates, key=lambda r: abs(r["time"] - moment))
        actual = end["time"] - nearest["time"]
        error = float(nearest["eta_s"]) - actual
        out[fraction] = {
            "at_s": round(nearest["time"] - start_time, 1),
            "eta_s": float(nearest["eta_s"]),
            "actual_remaining_s": round(actual, 1),
            "error_s": round(error, 1),
            "relative": round(error / actual, 3) if actual > 0 else math.nan,
        }
    return out


def format_plan(
    phases: Mapping[str, int],
    seconds: float | None,
    tp: Throughput | None,
    *,
    workers: int,
    race_extra: int = 0,
) -> str:
    """The plan's header line: trials per phase and the estimated device time (racing: its first round)."""
    trials = ", ".join(f"{n} {phase}" for phase, n in phases.items() if n)
    if race_extra:
        trials += f" (+ up to {race_extra} more racing finals for undecided arms)"
    if seconds is None or tp is None:
        return f"plan: {trials} trials"
    minutes = seconds / 60
    return (
        f"plan: {trials} trials; about {minutes:.0f} device-minutes at most (step budgets are maxima), "
        f"about {minutes / max(1, workers):.0f} min with {workers} worker(s) on an otherwise idle machine\n"
        f"  throughput: {tp.describe()}"
    )
