"""Wall-clock and peak-memory measurement around the fit phase."""

from __future__ import annotations

import os
import threading
import time
from types import TracebackType

import torch

from tlbench.cost.device import DeviceInfo

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except OSError:
        return 0


class FitMeter:
    """Times a block (synchronising the GPU at both ends) and records its peak memory.

    GPU: peak bytes allocated by PyTorch on the device. CPU: peak resident set size of the process,
    sampled every 20 ms on a background thread (``memory_kind`` says which).
    """

    def __init__(self, device: DeviceInfo, *, sample_seconds: float = 0.02) -> None:
        self.device = device
        self.seconds = 0.0
        self.peak_bytes = 0
        self.memory_kind = "cuda_max_allocated" if device.is_gpu else "process_rss_peak"
        self._interval = sample_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0.0

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak_bytes = max(self.peak_bytes, _rss_bytes())

    def __enter__(self) -> FitMeter:
        if self.device.is_gpu:
            torch.cuda.synchronize(self.device.torch_device)
            torch.cuda.reset_peak_memory_stats(self.device.torch_device)
        else:
            self.peak_bytes = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, name="tlbench-rss", daemon=True)
            self._thread.start()
        self._start = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.device.is_gpu:
            torch.cuda.synchronize(self.device.torch_device)
        self.seconds = time.perf_counter() - self._start
        if self.device.is_gpu:
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device.torch_device))
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, _rss_bytes())

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20
