"""What the benchmark runs: the trial configurations, and one timed run of each kind.

Every kind of run is a function of Hydra overrides returning a :class:`Run` (its timing plus what it
produced, for sanity checks). The configurations are cells of the default sweep, or the default
trial itself, so the ratios describe work users actually pay for; where one is shortened to fit
the benchmark's budget the docstring of :class:`Plan` says so.
"""

from __future__ import annotations

import functools
import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from benchmarks.raw_loop import raw_full_finetune
from benchmarks.timing import Sample
from tlbench.config import RunConfig, load_config
from tlbench.run import train
from tlbench.tracking.names import (
    DEVICE_HOURS,
    DEVICE_HOURS_RULE,
    EVAL_FLOPS,
    FEATURE_CACHE,
    FIT_CPU_SECONDS,
    FIT_SECONDS,
    TEST_ACC,
    TRAIN_FLOPS,
    VAL_ACC,
)
from tlbench.training.device import autocast_context
from tlbench.training.inputs import batch_transform, reset_feature_cache
from tlbench.training.network import prepare

T = TypeVar("T")

# Every harness run: nothing written to the repository, no feature cache shared between runs.
COMMON = ("tracking=disabled", "trainer.feature_cache_dir=null", "trainer.progress_bar=false")
# The default sweep's base (sweeps/default.yaml) with its n_per_class=5 cells' data.
SWEEP_CELL_DATA = (
    "data=digits",
    "data.n_per_class=5",
    "data.max_val_per_class=20",
    "trainer.batch_size=32",
    "trainer.epochs=1",
    "trainer.min_steps=100",
    "trainer.val_checks=5",
    "trainer.early_stopping=true",
    "trainer.patience=2",
    "schedule=warmup_cosine",
)
# The sweep's n=5 cells train 100 steps (50 epochs of 50 images); the bench's fine-tune and partial
# runs keep the cells' data, model and schedule but a fixed, shorter number of epochs.
# Early stopping off: a ratio compares fits of a fixed length (one that stopped sooner would look faster).
SHORTENED = ("trainer.min_steps=null", "trainer.val_checks=null", "trainer.early_stopping=false")
UNTRACKED = ("trainer.count_flops=false",)
# The old eager settings, the numerator of eager_over_optimised: every trainer option whose default
# was changed to make training faster, set back to its old value. The one list to extend; the
# denominator is the trial with the defaults (trainer.compile=auto: a trial this short stays eager).
EAGER = ("trainer.channels_last=false", "trainer.compile=false")
TRACKED = ("tracking=mlflow", "tracking.experiment=bench", "trainer.count_flops=true")


@dataclass(frozen=True)
class SweepPlan:
    """A reduced copy of a sweep file: its tuning phase on a subset of its cells, finals dropped."""

    source: str = "default"  # a sweep name (sweeps/<name>.yaml) or a path
    cells: dict[str, list[Any]] = field(
        default_factory=lambda: {"strategy": ["linear_probe", "full_finetune"], "data.n_per_class": [5]}
    )
    base: tuple[str, ...] | None = None  # replaces the file's base (tests); None keeps it
    repeats: int = 3  # at most; a pair is added only while the time budget allows (see Plan.budget_s)


@dataclass(frozen=True)
class Plan:
    """The benchmark's configurations (Hydra overrides) and how often each is measured.

    Attributes:
        finetune: ``harness_over_raw_loop``, ``tracking_on_over_off`` and ``eager_over_optimised``:
            the default sweep's ``full_finetune, n_per_class=5`` cell (32 px), shortened from 12 to
            8 epochs to fit the budget (per-trial overheads weigh more in a shorter trial, so this
            is the harder case).
        probe: ``linear_probe_*``: the default trial's probe (``tlbench train strategy=linear_probe``):
            digits with its whole 987-image train pool, 10 epochs, val and test capped at 10 images
            per class (100 each): a probe whose training set dominates its evaluation sets, the case
            caching is for. With digits' default val (359) and test (451) the bound is 7.74x.
        partial: ``partial_cached_speedup``: the default sweep's ``partial, n_per_class=5`` cell
            (freeze_depth=4 of EfficientNet-Lite0's 8 groups: half depth), 12 epochs.
        warmup: Overrides appended to each configuration for its warm-up run (shorter, same shapes).
        repeats: Interleaved repeats of the probe and partial ratios.
        finetune_repeats: Repeats of the fine-tune trio (raw, harness, tracked): more, because its
            runs are short and tracking's cost is a small difference between two of them.
        budget_s: The sweep pair is repeated (up to ``sweep.repeats``) only while the whole bench
            is expected to stay within this many seconds.
    """

    finetune: tuple[str, ...] = (*SWEEP_CELL_DATA, *SHORTENED, "strategy=full_finetune", "trainer.epochs=8")
    probe: tuple[str, ...] = (
        "data=digits",
        "strategy=linear_probe",
        "strategy.probe.solver=sgd",  # the cache's speed-up for a head trained in epochs (L-BFGS: one pass)
        *SHORTENED,
        "trainer.epochs=10",
        "data.max_val_per_class=10",
        "data.max_test_per_class=10",
    )
    partial: tuple[str, ...] = (
        *SWEEP_CELL_DATA,
        *SHORTENED,
        "strategy=partial",
        "strategy.freeze_depth=4",
        "trainer.epochs=12",
    )
    warmup: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {
            "finetune": ("trainer.epochs=1",),
            "probe": ("trainer.epochs=1", "data.n_per_class=10"),
            "partial": ("trainer.epochs=1",),
        }
    )
    sweep: SweepPlan = field(default_factory=SweepPlan)
    repeats: int = 3
    finetune_repeats: int = 4
    budget_s: float = 14 * 60.0
    threads: int | None = None  # torch intra-op threads for every run (None: torch's default)
    # Overrides added to the base of every trial case (finetune, eager, probe, partial), before each
    # ratio's own settings (``EAGER``, ``cache_features=false``), which still apply on top: e.g.
    # ``trainer.channels_last=false`` measures every ratio on the old NCHW kernels. The sweep step
    # keeps its sweep file's base.
    base_overrides: tuple[str, ...] = ()

    def overrides(self, case: str, *extra: str, warmup: bool = False) -> list[str]:
        """Overrides of one run of ``case`` (finetune | probe | partial)."""
        threads = [f"trainer.num_threads={self.threads}"] if self.threads else []
        base: tuple[str, ...] = getattr(self, case)
        warm = self.warmup.get(case, ()) if warmup else ()
        return [*base, *self.base_overrides, *COMMON, *threads, *extra, *warm]


@dataclass(frozen=True)
class Run:
    """One timed run and what it produced (accuracies, cache status, sizes) for the report."""

    sample: Sample
    info: dict[str, Any]


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], T]) -> tuple[T, Sample]:
    """Run ``fn`` once; wall and CPU time, GPU-synchronised at both ends, peak GPU memory."""
    gc.collect()  # garbage of the previous run is not this run's cost
    gpu = torch.cuda.is_available()
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    _sync()
    sample = Sample(
        wall_s=time.perf_counter() - wall,
        cpu_s=time.process_time() - cpu,
        peak_mb=torch.cuda.max_memory_allocated() / 2**20 if gpu else None,
    )
    return result, sample


@functools.lru_cache(maxsize=32)
def _compose(overrides: tuple[str, ...]) -> RunConfig:
    return load_config(overrides)


def config(overrides: Sequence[str]) -> RunConfig:
    """The composed config, once per distinct overrides (``train`` does not modify it)."""
    return _compose(tuple(overrides))


def harness_run(overrides: Sequence[str]) -> Run:
    """``train(cfg)``, the whole call (data, model, fit, evaluation, cost, tracking if enabled)."""
    cfg = config(overrides)
    reset_feature_cache()
    result, sample = timed(lambda: train(cfg))
    metrics = result.metrics
    info = {
        "status": result.status,
        "val_acc": metrics.get(VAL_ACC),
        "test_acc": metrics.get(TEST_ACC),
        "fit_seconds": metrics.get(FIT_SECONDS),
        "fit_cpu_seconds": metrics.get(FIT_CPU_SECONDS),
        "device_hours": metrics.get(DEVICE_HOURS),
        "device_hours_rule": result.tags.get(DEVICE_HOURS_RULE),
        "train_flops": metrics.get(TRAIN_FLOPS),
        "eval_flops": metrics.get(EVAL_FLOPS),
        "feature_cache": result.tags.get(FEATURE_CACHE),
        "epochs": len(result.history),
        "val_passes": sum(1 for r in result.history if r.val_acc is not None),
        "n_train": result.params.get("n_train"),
        "n_val": result.params.get("n_val"),
        "n_test": result.params.get("n_test"),
    }
    return Run(sample, info)


def raw_run(overrides: Sequence[str]) -> Run:
    """The hand-written loop on the same configuration (see :mod:`benchmarks.raw_loop`)."""
    cfg = config(overrides)
    outcome, sample = timed(lambda: raw_full_finetune(cfg))
    info = {
        "val_acc": outcome.val_acc,
        "test_acc": outcome.test_acc,
        "optimizer_steps": outcome.optimizer_steps,
        "val_passes": outcome.val_passes,
        "eval_images": outcome.eval_images,
    }
    return Run(sample, info)


def extraction_floor(cfg: RunConfig) -> Callable[[], int]:
    """One inference-mode forward of the backbone over train + val + test at the eval batch size.

    Data and model are prepared before the clock starts: the floor is the forward pass alone, what
    no amount of caching can remove from a linear probe. Returns the timed function.
    """
    trial = prepare(cfg)
    device, precision, splits, model = trial.device, trial.precision, trial.splits, trial.model
    channels_last = trial.channels_last
    backbone = model.network.backbone.eval()
    transform = batch_transform(model.mean, model.std, channels_last=channels_last)
    images = [splits.train.images, splits.val.images, splits.test.images]
    batch = cfg.trainer.eval_batch_size

    def forward_all() -> int:
        seen = 0
        with torch.inference_mode(), autocast_context(device.kind, precision):
            for split in images:
                for start in range(0, len(split), batch):
                    backbone(transform(split[start : start + batch]))
                    seen += len(split[start : start + batch])
        return seen

    return forward_all


def floor_run(overrides: Sequence[str]) -> Run:
    forward_all = extraction_floor(config(overrides))
    seen, sample = timed(forward_all)
    return Run(sample, {"images": seen})
