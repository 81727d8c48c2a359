"""Which device a trial runs on, what "device-hours" means (the one definition: :func:`device_seconds`),
the timed fit and the meter that measures it, and the cost metrics they turn into.

**The rule** (tag ``device_hours_rule`` on every run):

- **GPU (cuda) and MPS**: wall-clock seconds of the fit phase x devices / 3600. A trial has its GPU to
  itself, so its wall time is its compute; these are GPU-hours, and the ``device`` tag names the GPU.
- **CPU**: the process's CPU seconds during the fit phase / the torch threads it ran with / 3600:
  the trial's own compute in "one busy core per thread" units. Wall time moves with whatever else
  runs on a shared CPU (25x between identical runs in a sweep on a busy 2-core machine); the work
  a process does does not. Alone on an idle machine the two agree up to the serial Python parts of
  a step (the other threads sleep there), so CPU device-hours are at most the wall figure.

What the CPU seconds hold: every thread of the trial's process (the training loop, torch's intra-op
threads, frozen-prefix feature extraction, which is training work, and the validation passes inside
the fit), plus torch.compile's compile-worker processes (no other child: a competing process that a
benchmark starts is not the trial's), **minus** the peak-memory sampler thread
(:class:`FitMeter` measures its own CPU time and takes it out). Threads waiting
on each other must sleep for this to hold: ``OMP_WAIT_POLICY=PASSIVE``, set by ``tlbench`` before
torch loads (:mod:`tlbench.cost.threads`); a user who sets ``ACTIVE`` counts the spinning too.
``cost/fit_seconds`` stays the wall-clock figure, ``cost/fit_cpu_seconds`` the CPU one.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import torch
from torch import nn

from tlbench.errors import ConfigError, TrialFailed, TrialPruned
from tlbench.tracking import names as N


@dataclass(frozen=True)
class DeviceInfo:
    kind: str  # cpu | cuda | mps
    name: str  # e.g. "cpu" or the GPU's name ("NVIDIA H100 80GB HBM3")
    model: str  # hardware model string (the CPU model on a CPU)
    index: int | None
    count: int  # devices a trial trains on (tlbench trains one trial on one device)

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.kind if self.index is None else f"{self.kind}:{self.index}")

    @property
    def accelerator(self) -> str:
        """Lightning's accelerator name."""
        return {"cuda": "gpu"}.get(self.kind, self.kind)

    @property
    def is_gpu(self) -> bool:
        return self.kind == "cuda"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def resolve_device(requested: str) -> DeviceInfo:
    """``auto`` picks the first CUDA GPU, else Apple MPS, else the CPU; explicit requests are checked."""
    if requested == "auto":
        if torch.cuda.is_available():
            requested = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            requested = "mps"
        else:
            requested = "cpu"
    if requested == "cpu":
        return DeviceInfo(kind="cpu", name="cpu", model=cpu_model(), index=None, count=1)
    if requested == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("trainer.device=mps but MPS is not available here; use trainer.device=auto")
        return DeviceInfo(kind="mps", name="mps", model=platform.machine(), index=None, count=1)
    index = int(requested.split(":", 1)[1]) if ":" in requested else 0
    if not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.device={requested} but no CUDA GPU is visible; use trainer.device=auto or cpu"
        )
    if index >= torch.cuda.device_count():
        raise ConfigError(f"trainer.device={requested}: only {torch.cuda.device_count()} GPU(s) visible")
    name = torch.cuda.get_device_name(index)
    return DeviceInfo(kind="cuda", name=name, model=name, index=index, count=1)


def resolve_precision(requested: str, device: DeviceInfo) -> str:
    """``auto``: bf16 mixed precision on a bf16-capable GPU, fp32 elsewhere.

    Not bf16 on a CPU, even one with AMX-BF16: measured on this project's 2-core Xeon (one thread,
    EfficientNet-Lite0 at 224 px, docs/benchmarks.md), a bf16-autocast training step cost 2.11 CPU-s
    against 1.00 in fp32 (depthwise convolutions), and evaluating 64 images 3.07 against 3.05: nothing
    to gain for numbers that would differ from the fp32 ones.
    """
    if requested != "auto":
        if requested != "32" and not device.is_gpu:
            raise ConfigError(f"trainer.precision={requested} needs a GPU; this trial runs on {device.kind}")
        return requested
    if device.is_gpu and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32"


def resolve_deterministic(reproducible: bool, device: DeviceInfo) -> bool | str:
    """Lightning's ``deterministic`` for ``trainer.deterministic`` (same seed, same result) on ``device``.

    A GPU or MPS needs torch's deterministic algorithms for that ("warn": some kernels have no
    deterministic variant and must not abort a trial). A CPU does not: measured on a 2-core Xeon
    (docs/benchmarks.md), results are bit-identical with and without them at the same seed and thread
    count, and a training step costs 1.24x more with them (EfficientNet-Lite0, 224 px, batch 8: 1.24
    vs 1.00 CPU-s), so they stay off there.
    """
    if not reproducible or device.kind == "cpu":
        return False
    return "warn"


def release_memory(on_gpu: bool = True) -> None:
    """Collect what a finished or failed trial left behind (an exception's frames hold activations)
    and return the CUDA allocator's cached blocks: after an out-of-memory error, and between the
    trials of a sweep, so the next one starts clean."""
    gc.collect()
    if on_gpu and torch.cuda.is_available():
        torch.cuda.empty_cache()


def use_channels_last(network: nn.Module, *, requested: bool, device: DeviceInfo) -> bool:
    """``trainer.channels_last`` where it pays: a CNN (most parameters in convolutions) on a CPU or a CUDA
    GPU, where NHWC training steps ran 1.6-2x faster (docs/benchmarks.md) with the same results."""
    if not requested or device.kind not in ("cpu", "cuda"):
        return False
    conv = sum(p.numel() for m in network.modules() if isinstance(m, nn.Conv2d) for p in m.parameters())
    total = sum(p.numel() for p in network.parameters())
    return total > 0 and conv / total > 0.5


def device_seconds(
    kind: str, *, wall_seconds: float, cpu_seconds: float, threads: int, devices: int
) -> float:
    """Device-seconds of a measured stretch of work, by the rule in the module docstring.

    Args:
        kind: ``cpu``, ``cuda`` or ``mps``.
        wall_seconds: Its wall-clock seconds.
        cpu_seconds: The process's (and its children's) CPU seconds over it, samplers excluded.
        threads: Torch intra-op threads it ran with (CPU).
        devices: Devices it ran on (GPU, MPS).
    """
    if wall_seconds < 0 or cpu_seconds < 0 or threads < 1 or devices < 1:
        raise ValueError(f"invalid {wall_seconds=}, {cpu_seconds=}, {threads=} or {devices=}")
    if kind == "cpu":
        return cpu_seconds / threads
    return wall_seconds * devices


def device_hours_rule(kind: str, *, threads: int, devices: int) -> str:
    """The rule :func:`device_seconds` applied, in words (the ``device_hours_rule`` tag)."""
    if kind == "cpu":
        return f"cpu: process CPU seconds of the fit / {threads} torch thread(s) / 3600"
    return f"{kind}: wall seconds of the fit x {devices} device(s) / 3600"


def device_hours(fit_seconds: float, device_count: int) -> float:
    """Wall seconds x devices / 3600: the GPU rule, for callers that measure wall time only."""
    return (
        device_seconds("cuda", wall_seconds=fit_seconds, cpu_seconds=0.0, threads=1, devices=device_count)
        / 3600
    )


def autocast_context(device_type: str, precision: str) -> contextlib.AbstractContextManager[object]:
    """Mixed precision matching the training precision (a no-op for fp32), for forward passes outside
    Lightning (feature extraction, evaluation)."""
    if precision.startswith("bf16"):
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return torch.autocast(device_type=device_type, dtype=torch.float16)
    return contextlib.nullcontext()


# Wall clock, CPU time and peak memory around the fit phase (their rule: :mod:`tlbench.cost.device`).

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except OSError:
        return 0


# torch.compile's inductor compiles in a pool of helper processes (torch/_inductor/compile_worker):
# their CPU time is the trial's compile work. Only they are counted, never other children: a benchmark
# or a test that starts a competing CPU-bound process must not see that process billed to the trial.
_COMPILE_WORKER = "compile_worker"


def _compile_workers_cpu() -> dict[int, float]:
    """CPU seconds of each live compile-worker process descending from this one, by pid."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a dependency; without it workers are not counted
        return {}
    out: dict[int, float] = {}
    for child in psutil.Process().children(recursive=True):
        try:
            if not any(_COMPILE_WORKER in part for part in child.cmdline()):
                continue
            times = child.cpu_times()
        except psutil.Error:  # it ended meanwhile
            continue
        out[child.pid] = times.user + times.system
    return out


class FitMeter:
    """Times a block: wall clock (synchronising the GPU at both ends), CPU time, threads and peak memory.

    CPU time: :func:`time.process_time` (every thread of this process) plus what torch.compile's
    compile-worker processes spent during the block, minus the memory sampler's own thread time.
    Peak memory: on a GPU, bytes allocated by PyTorch on the device; on a CPU, the process's resident
    set size sampled every 20 ms on a background thread (``memory_kind`` says which).
    """

    def __init__(self, device: DeviceInfo, *, sample_seconds: float = 0.02, memory: bool = True) -> None:
        self.device = device
        self.seconds = 0.0  # wall
        self.cpu_seconds = 0.0
        self.threads = 1
        self.peak_bytes = 0
        self.memory_kind = "cuda_max_allocated" if device.is_gpu else "process_rss_peak"
        self._memory = memory
        self._interval = sample_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampler_cpu = 0.0
        self._start = 0.0
        self._cpu_start = 0.0
        self._workers_start: dict[int, float] = {}

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak_bytes = max(self.peak_bytes, _rss_bytes())
        self._sampler_cpu = time.thread_time()  # this thread's whole life: not the trial's work

    def __enter__(self) -> FitMeter:
        self.threads = torch.get_num_threads()
        if self.device.is_gpu:
            torch.cuda.synchronize(self.device.torch_device)
            torch.cuda.reset_peak_memory_stats(self.device.torch_device)
        elif self._memory:
            self.peak_bytes = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, name="tlbench-rss", daemon=True)
            self._thread.start()
        self._workers_start = _compile_workers_cpu()
        self._cpu_start = time.process_time()
        self._start = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.device.is_gpu:
            torch.cuda.synchronize(self.device.torch_device)
        self.seconds = time.perf_counter() - self._start
        cpu = time.process_time() - self._cpu_start
        if self.device.is_gpu:
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device.torch_device))
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, _rss_bytes())
            cpu -= self._sampler_cpu
        workers = _compile_workers_cpu()
        cpu += sum(max(0.0, t - self._workers_start.get(pid, 0.0)) for pid, t in workers.items())
        self.cpu_seconds = max(0.0, cpu)

    @property
    def device_seconds(self) -> float:
        """The block's device-seconds by the one rule (:func:`device_seconds`)."""
        return device_seconds(
            self.device.kind,
            wall_seconds=self.seconds,
            cpu_seconds=self.cpu_seconds,
            threads=self.threads,
            devices=self.device.count,
        )

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20


# Turn measured work into the logged cost metrics (``cost/*``).


@dataclass(frozen=True)
class PhaseWork:
    """Training samples processed in a phase, and the measured FLOPs of one sample's step."""

    name: str
    samples: int
    flops_per_sample: float  # forward + backward, frozen layers honoured


@dataclass(frozen=True)
class TrialCost:
    """What a trial spent, and what it would have spent alone.

    ``train_flops``/``device_hours`` count the work this trial really did, so they add up over a
    sweep. A trial that reused frozen-prefix features extracted by an earlier trial did not pay for
    that extraction; ``standalone_*`` add it back: the cost of running this trial on its own.
    """

    fit_seconds: float  # wall clock
    fit_cpu_seconds: float  # process CPU (see tlbench.cost.device)
    threads: int  # torch intra-op threads of the fit
    device_hours: float  # by the rule of tlbench.cost.device (device_hours_rule says which)
    train_flops: (
        float | None
    )  # training forward+backward (+ this trial's feature extraction); None: not counted
    eval_flops: float | None  # validation and test forward passes
    standalone_device_hours: float
    standalone_train_flops: float | None
    train_samples: int
    images_per_second: float  # training samples / fit wall seconds (validation included in the fit)
    peak_memory_mb: float
    memory_kind: str
    device: DeviceInfo

    def metrics(self) -> dict[str, float]:
        out = {
            N.DEVICE_HOURS: self.device_hours,
            N.FIT_SECONDS: self.fit_seconds,
            N.FIT_CPU_SECONDS: self.fit_cpu_seconds,
            N.STANDALONE_DEVICE_HOURS: self.standalone_device_hours,
            N.TRAIN_SAMPLES: float(self.train_samples),
            N.IMAGES_PER_SECOND: self.images_per_second,
            N.PEAK_MEMORY_MB: self.peak_memory_mb,
        }
        flops = {
            N.TRAIN_FLOPS: self.train_flops,
            N.EVAL_FLOPS: self.eval_flops,
            N.STANDALONE_TRAIN_FLOPS: self.standalone_train_flops,
        }
        out.update({k: v for k, v in flops.items() if v is not None})
        return out

    @property
    def rule(self) -> str:
        """How ``device_hours`` was computed (the ``device_hours_rule`` tag)."""
        return device_hours_rule(self.device.kind, threads=self.threads, devices=self.device.count)


def trial_cost(
    *,
    fit_seconds: float,
    fit_cpu_seconds: float,
    threads: int,
    phases: Sequence[PhaseWork],
    extraction_flops: float,
    eval_flops: float,
    reused_extraction_flops: float = 0.0,
    reused_extraction_seconds: float = 0.0,  # device-seconds the reused extraction cost its trial
    flops_counted: bool = True,
    peak_memory_mb: float,
    memory_kind: str,
    device: DeviceInfo,
) -> TrialCost:
    samples = sum(p.samples for p in phases)
    train_flops = extraction_flops + sum(p.samples * p.flops_per_sample for p in phases)
    seconds = device_seconds(
        device.kind,
        wall_seconds=fit_seconds,
        cpu_seconds=fit_cpu_seconds,
        threads=threads,
        devices=device.count,
    )
    return TrialCost(
        fit_seconds=fit_seconds,
        fit_cpu_seconds=fit_cpu_seconds,
        threads=threads,
        device_hours=seconds / 3600.0,
        train_flops=train_flops if flops_counted else None,
        eval_flops=eval_flops if flops_counted else None,
        standalone_device_hours=(seconds + reused_extraction_seconds) / 3600.0,
        standalone_train_flops=train_flops + reused_extraction_flops if flops_counted else None,
        train_samples=samples,
        images_per_second=samples / fit_seconds if fit_seconds > 0 else 0.0,
        peak_memory_mb=peak_memory_mb,
        memory_kind=memory_kind,
        device=device,
    )


# -- the timed fit ----------------------------------------------------------------------------------


@dataclass
class FitOutcome:
    """How the fit ended and what it cost in time and memory (``status``: completed | pruned | failed:
    <reason>); :func:`timed_fit` fills it as the block ends."""

    status: str = N.COMPLETED
    seconds: float = 0.0  # wall clock
    cpu_seconds: float = 0.0  # process CPU (tlbench.cost.device's rule turns it into device-hours)
    threads: int = 1  # torch intra-op threads during the fit
    peak_mb: float = 0.0
    memory_kind: str = "none"
    started: float = 0.0  # time.perf_counter() when the clock started
    error: BaseException | None = None  # an unexpected exception, re-raised after it is recorded
    interrupted: bool = False  # Ctrl-C: recorded, then re-raised as KeyboardInterrupt


def _failure(exc: BaseException) -> tuple[str, bool]:
    """(status, is an out-of-memory error) of an unexpected exception."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower():
        return f"failed: out of memory ({str(exc).splitlines()[0][:160]})", True
    return f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}", False


@contextmanager
def timed_fit(device: DeviceInfo, *, timed: bool) -> Iterator[FitOutcome]:
    """The timed fit phase of one trial: its cost is measured around the block (device and CPU time,
    threads, peak memory: :class:`FitMeter`), and pruning, divergence, out of memory and Ctrl-C end in
    the outcome's status instead of propagating. ``timed``: False for a strategy that trains nothing
    (as_is: zero training cost by construction).
    """
    outcome = FitOutcome()
    sigint = signal.getsignal(signal.SIGINT)
    meter = FitMeter(device) if timed else None
    try:
        with meter if meter is not None else nullcontext():
            outcome.started = time.perf_counter()
            yield outcome
    except TrialPruned:
        outcome.status = N.PRUNED
    except TrialFailed as exc:
        outcome.status = f"failed: {exc.reason}"
    except (KeyboardInterrupt, SystemExit):
        # Lightning turns Ctrl-C into sys.exit(1) after ignoring SIGINT: record, then re-raise.
        outcome.status, outcome.interrupted = "failed: interrupted", True
    except Exception as exc:
        outcome.status, oom = _failure(exc)
        if oom:
            release_memory(device.is_gpu)
        else:
            outcome.error = exc  # a bug: re-raised once the trial is recorded
    finally:
        signal.signal(signal.SIGINT, sigint)
        if meter is not None:
            outcome.seconds, outcome.cpu_seconds, outcome.threads = (
                meter.seconds,
                meter.cpu_seconds,
                meter.threads,
            )
            outcome.peak_mb, outcome.memory_kind = meter.peak_mb, meter.memory_kind
        else:
            outcome.threads = torch.get_num_threads()
