"""The benchmark's output: what each ratio means and targets, the printed table, ``reports/bench.json``.

Pure functions over :class:`RatioResult`; the measuring lives in :mod:`benchmarks.run`.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmarks.timing import Spread
from tlbench.training.device import cpu_model


@dataclass(frozen=True)
class Target:
    op: str  # "<=", ">=", or "in" (between ``bound`` and ``upper``, both included)
    bound: float
    upper: float | None = None

    def __post_init__(self) -> None:
        if self.op not in ("<=", ">=", "in"):
            raise ValueError(f"target op must be <=, >= or in, got {self.op=}")
        if (self.op == "in") != (self.upper is not None) or (
            self.upper is not None and self.upper < self.bound
        ):
            raise ValueError(f"a range target needs op 'in' and bound <= upper, got {self.op=} {self.upper=}")

    def met(self, value: float) -> bool:
        if self.op == "in":
            return self.bound <= value <= (self.upper if self.upper is not None else self.bound)
        return value <= self.bound if self.op == "<=" else value >= self.bound

    def __str__(self) -> str:
        if self.op == "in":
            return f"{self.bound:.3g}..{self.upper:.3g}"
        return f"{self.op} {self.bound:.3g}"


@dataclass(frozen=True)
class RatioSpec:
    target: Target | None
    definition: str


RATIOS: dict[str, RatioSpec] = {
    "harness_over_raw_loop": RatioSpec(
        Target("<=", 1.05),
        "wall time of train(cfg) (tracking=disabled, count_flops=false, the whole call: data, model, "
        "fit, validation every epoch, test) / a hand-written PyTorch loop doing the same work "
        "(same load_splits data, timm model and weights, AdamW groups, LR schedule, epochs, batch "
        "size, shuffling, per-epoch validation, one test pass); full fine-tune",
    ),
    "linear_probe_cached_speedup": RatioSpec(
        Target(">=", 8.0),
        "wall time of a 10-epoch linear-probe train(cfg) with trainer.cache_features=false / the same "
        "trial with the frozen-backbone features extracted once (a cache miss); same seed, accuracy "
        "compared; bounded by (epochs*(n_train+n_val)+n_test)/(n_train+n_val+n_test) images",
    ),
    "linear_probe_over_one_extraction_pass": RatioSpec(
        Target("<=", 1.5),
        "wall time of the cached linear-probe trial above (a cache miss: it extracts; FLOP profile "
        "memo warm, whole train(cfg) call) / one torch.inference_mode() forward of the backbone over "
        "its train+val+test images at the eval batch size (data and model prepared beforehand)",
    ),
    "partial_cached_speedup": RatioSpec(
        None,
        "wall time of a partial fine-tune at half depth (freeze_depth=4 of 8 groups) with "
        "trainer.cache_features=false / with the frozen prefix's activations extracted once",
    ),
    "tracking_on_over_off": RatioSpec(
        Target("<=", 1.02),
        "wall time of train(cfg) with tracking=mlflow (SQLite store created beforehand) and "
        "trainer.count_flops=true / with tracking=disabled and trainer.count_flops=false; the "
        "full fine-tune trial of harness_over_raw_loop, in a warm process",
    ),
    "eager_over_optimised": RatioSpec(
        Target(">=", 1.8),
        "wall time of train(cfg) with the old eager settings (benchmarks.cases.EAGER: "
        "trainer.channels_last=false) / the same trial with today's defaults; the full fine-tune "
        "trial of harness_over_raw_loop, both with tracking=disabled and trainer.count_flops=true",
    ),
    "trial_loaded_over_alone": RatioSpec(
        Target("<=", 2.3),
        "wall time of the fine-tune trial of harness_over_raw_loop with one torch thread per usable core, "
        "run while one busy-loop child process per usable core competes for the CPU / the same trial "
        "alone (interleaved pairs); ideal 2 (half the machine), more means threads waiting on each other",
    ),
    "cost_loaded_over_alone": RatioSpec(
        Target("in", 0.8, 1.25),
        "cost/device_hours the loaded trial of trial_loaded_over_alone logged / what the alone trial "
        "logged (median of per-pair ratios): a cost that counts the trial's own compute reads the same",
    ),
    "default_sweep_pruned_over_unpruned": RatioSpec(
        Target("<=", 1 / 3),
        "summed cost/device_hours of the default sweep's tuning phase on a subset of its cells (same "
        "search space, sampler and seed, budget per cell) run with its pruner / with pruner: none; "
        "passes only if the best val/acc of every cell is within 1 point",
    ),
    "default_sweep_wall_over_flops_floor": RatioSpec(
        None,
        "wall time of the pruned reduced default sweep of default_sweep_pruned_over_unpruned (the whole "
        "tlbench sweep command) / (the summed cost/train_flops + cost/eval_flops its trial runs logged "
        "/ the fit-phase FLOP/s of eager_over_optimised's optimised runs, their median): distance from "
        "the machine's training throughput",
    ),
}


@dataclass
class RatioResult:
    """One ratio as measured: value (None if not measured, with ``reason``), spreads, details."""

    name: str
    value: float | None
    wall: Spread | None = None  # per-pair wall-time ratios
    cpu: Spread | None = None  # per-pair CPU-time ratios
    fastest: float | None = None  # fastest run of one kind / fastest of the other
    details: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    accuracy_ok: bool | None = None  # a side condition of the target (sweep: within 1 point)

    @property
    def spec(self) -> RatioSpec:
        return RATIOS[self.name]

    @property
    def passed(self) -> bool | None:
        target = self.spec.target
        if target is None or self.value is None:
            return None
        return target.met(self.value) and self.accuracy_ok is not False

    def as_details(self) -> dict[str, Any]:
        target = self.spec.target
        out: dict[str, Any] = {
            "definition": self.spec.definition,
            "target": str(target) if target else None,
            "passed": self.passed,
            "value": self.value,
        }
        if self.wall is not None:
            out["wall_ratio"] = self.wall.as_dict()
        if self.cpu is not None:
            out["cpu_ratio"] = self.cpu.as_dict()
        if self.fastest is not None:
            out["fastest_run_ratio"] = self.fastest
        if self.reason:
            out["reason"] = self.reason
        return {**out, **self.details}


def machine_info(threads: int | None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": threads or torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def bench_json(results: Sequence[RatioResult], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``{"ratios": {name: value}, "details": {name: {...}, plus run-wide entries}}``."""
    return {
        "ratios": {r.name: r.value for r in results},
        "details": {**{r.name: r.as_details() for r in results}, **extra},
    }


def check_bench_json(data: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``data`` has the documented shape (every ratio, a number or null)."""
    if set(data) != {"ratios", "details"}:
        raise ValueError(f"bench.json needs exactly 'ratios' and 'details', got {sorted(data)}")
    ratios, details = data["ratios"], data["details"]
    missing = [name for name in RATIOS if name not in ratios or name not in details]
    if missing:
        raise ValueError(f"bench.json lacks ratios {missing}")
    for name in RATIOS:
        value = ratios[name]
        if value is not None and not isinstance(value, (int, float)):
            raise ValueError(f"ratio {name} must be a number or null, got {value!r}")
        if value is None and not details[name].get("reason"):
            raise ValueError(f"ratio {name} is null without a reason in details")
    for key in ("machine", "load_average", "wall_s"):
        if key not in details:
            raise ValueError(f"bench.json details lack '{key}'")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: Sequence[RatioResult]) -> str:
    """The printed summary: ratio, value, target, verdict, spread of per-pair ratios, cross-checks."""
    header = ("ratio", "value", "target", "pass", "spread (min..max)", "cpu-time", "fastest", "n")
    rows = [header]
    for r in results:
        target = r.spec.target
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[r.passed]
        spread_text = f"{_fmt(r.wall.minimum)}..{_fmt(r.wall.maximum)}" if r.wall else "-"
        rows.append(
            (
                r.name,
                _fmt(r.value),
                str(target) if target else "-",
                verdict if r.value is not None else "null",
                spread_text,
                _fmt(r.cpu.median) if r.cpu else "-",
                _fmt(r.fastest),
                str(r.wall.n) if r.wall else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {r.name}: {r.reason}" for r in results if r.reason]
    return "\n".join(lines + (["", "notes:", *notes] if notes else []))
