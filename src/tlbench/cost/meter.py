"""Wall clock, CPU time and peak memory around the fit phase (their rule: :mod:`tlbench.cost.device`)."""

from __future__ import annotations

import os
import threading
import time
from types import TracebackType

import torch

from tlbench.cost.device import DeviceInfo, device_seconds

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
        """The block's device-seconds by the one rule (:func:`tlbench.cost.device.device_seconds`)."""
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
