"""Which device a trial runs on, what "device-hours" means (the one definition: :func:`device_seconds`),
the timed fit and the meter that measures it, and the cost metrics they turn into.

**The rule** (tag ``device_hours_rule`` on every run):

- **GPU (cuda) and MPS**: wall-clock seconds of the fit x devices / 3600 (a trial has its GPU to
  itself: these are GPU-hours, and the ``device`` tag names the GPU).
- **CPU**: the process's CPU seconds during the fit / its torch threads / 3600: the trial's own
  compute. Wall time moves with whatever else runs on a shared CPU (25x between identical runs in a
  sweep on a busy 2-core machine); the work a process does does not. Alone on an idle machine the two
  agree up to a step's serial Python parts, so CPU device-hours are at most the wall figure.

The CPU seconds hold every thread of the process (loop, intra-op threads, feature extraction and
validation inside the fit) plus torch.compile's compile workers (no other child), minus the peak-memory
sampler's own thread (:class:`FitMeter`). Waiting threads must sleep for this to hold:
``OMP_WAIT_POLICY=PASSIVE``, set before torch loads (:mod:`tlbench.training.threads`).
``cost/fit_seconds`` stays the wall-clock figure, ``cost/fit_cpu_seconds`` the CPU one.
"""

from __future__ import annotations

import contextlib
import gc
import platform
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil
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
    """``auto``: bf16 mixed precision on a bf16-capable GPU, fp32 elsewhere. Not bf16 on a CPU, even with
    AMX-BF16 (docs/benchmarks.md, lite0 at 224 px, one thread): a bf16 training step cost 2.11 CPU-s
    against 1.00 in fp32, evaluating 64 images 3.07 against 3.05."""
    if requested != "auto":
        if requested != "32" and not device.is_gpu:
            raise ConfigError(f"trainer.precision={requested} needs a GPU; this trial runs on {device.kind}")
        return requested
    if device.is_gpu and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32"


def resolve_deterministic(reproducible: bool, device: DeviceInfo) -> bool | str:
    """Lightning's ``deterministic`` for ``trainer.deterministic`` (same seed, same result): "warn" on a
    GPU or MPS (some kernels have no deterministic variant). Off on a CPU: results were bit-identical
    without them at a fixed thread count, and a step cost 1.24x more with them (docs/benchmarks.md)."""
    if not reproducible or device.kind == "cpu":
        return False
    return "warn"


def release_memory(on_gpu: bool = True) -> None:
    """Collect what a trial left behind (an exception's frames hold activations) and return the CUDA
    allocator's cached blocks: after an out-of-memory error, and between a sweep's trials."""
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
    """Device-seconds of a measured stretch of work (``kind``: cpu, cuda or mps), by the module's rule."""
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
    return fit_seconds * device_count / 3600


def autocast_context(device_type: str, precision: str) -> contextlib.AbstractContextManager[object]:
    """Mixed precision matching the training precision (a no-op for fp32), for forward passes outside
    Lightning (feature extraction, evaluation)."""
    dtype = {"bf16": torch.bfloat16, "16": torch.float16}.get(precision.split("-")[0])
    return torch.autocast(device_type=device_type, dtype=dtype) if dtype else contextlib.nullcontext()


def _rss_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


# torch.compile's inductor compiles in helper processes (torch/_inductor/compile_worker): the trial's
# work. Only they are counted: a competing process a benchmark starts must not be billed to the trial.
_COMPILE_WORKER = "compile_worker"


def _compile_workers_cpu() -> dict[int, float]:
    """CPU seconds of each live compile-worker process descending from this one, by pid."""
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
    """Times a block: wall clock (the GPU synchronised at both ends), CPU time (the process's, plus
    torch.compile's workers', minus the memory sampler's thread), threads and peak memory (a GPU's
    allocated bytes, or the process's RSS sampled every 20 ms: ``memory_kind`` says which)."""

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


def trial_cost(
    outcome: FitOutcome,
    *,
    train_samples: int,
    train_flops: float | None,
    eval_flops: float | None,
    reused_flops: float = 0.0,
    reused_seconds: float = 0.0,
) -> dict[str, float]:
    """The ``cost/*`` metrics of a fit (``*_flops`` None: not counted). ``train_flops`` and
    ``device_hours`` count the work this trial did, so they add up over a sweep; ``standalone_*`` add
    back a frozen-prefix extraction reused from an earlier trial (``reused_*``, device-seconds): what
    the trial would have cost alone."""
    seconds = outcome.device_seconds
    metrics = {
        N.DEVICE_HOURS: seconds / 3600.0,
        N.FIT_SECONDS: outcome.seconds,
        N.FIT_CPU_SECONDS: outcome.cpu_seconds,
        N.STANDALONE_DEVICE_HOURS: (seconds + reused_seconds) / 3600.0,
        N.TRAIN_SAMPLES: float(train_samples),
        N.IMAGES_PER_SECOND: train_samples / outcome.seconds if outcome.seconds > 0 else 0.0,
        N.PEAK_MEMORY_MB: outcome.peak_mb,
    }
    if train_flops is not None and eval_flops is not None:
        metrics[N.TRAIN_FLOPS] = train_flops
        metrics[N.EVAL_FLOPS] = eval_flops
        metrics[N.STANDALONE_TRAIN_FLOPS] = train_flops + reused_flops
    return metrics


# -- the timed fit ----------------------------------------------------------------------------------


class FitOutcome(FitMeter):
    """How the fit ended (completed | pruned | failed: <reason>) and what it cost: the meter's figures
    when :func:`timed_fit` timed it."""

    def __init__(self, device: DeviceInfo) -> None:
        super().__init__(device)
        self.status = N.COMPLETED
        self.started = 0.0  # time.perf_counter() when the clock started
        self.error: BaseException | None = None  # an unexpected exception, re-raised after it is recorded
        self.interrupted = False  # Ctrl-C: recorded, then re-raised as KeyboardInterrupt


def _failure(exc: BaseException) -> tuple[str, bool]:
    """(status, is an out-of-memory error) of an unexpected exception."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower():
        return f"failed: out of memory ({str(exc).splitlines()[0][:160]})", True
    return f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}", False


@contextmanager
def timed_fit(device: DeviceInfo, *, timed: bool) -> Iterator[FitOutcome]:
    """The timed fit of one trial (the outcome, a :class:`FitMeter`, measures the block; ``timed=False``:
    as_is, nothing trains): pruning, divergence, out of memory and Ctrl-C end in the outcome's status,
    not raised."""
    outcome = FitOutcome(device)
    if not timed:
        outcome.memory_kind = "none"
    sigint = signal.getsignal(signal.SIGINT)
    yielded = False
    try:
        with outcome if timed else nullcontext():
            outcome.started = time.perf_counter()
            yielded = True
            yield outcome
    except TrialPruned:
        outcome.status = N.PRUNED
    except TrialFailed as exc:
        outcome.status = f"failed: {exc.reason}"
    except (KeyboardInterrupt, SystemExit):
        if not yielded:  # Ctrl-C while the meter started: no block ran, the caller sees the interrupt
            raise
        # Lightning turns Ctrl-C into sys.exit(1) after ignoring SIGINT: record, then re-raise.
        outcome.status, outcome.interrupted = "failed: interrupted", True
    except Exception as exc:
        if not yielded:
            raise
        outcome.status, oom = _failure(exc)
        if oom:
            release_memory(device.is_gpu)
        else:
            outcome.error = exc  # a bug: re-raised once the trial is recorded
    finally:
        signal.signal(signal.SIGINT, sigint)
        if not timed:
            outcome.threads = torch.get_num_threads()
