"""Which device a trial runs on, and what "device-hours" means (the one definition: :func:`device_seconds`).

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
(:class:`tlbench.cost.meter.FitMeter` measures its own CPU time and takes it out). Threads waiting
on each other must sleep for this to hold: ``OMP_WAIT_POLICY=PASSIVE``, set by ``tlbench`` before
torch loads (:mod:`tlbench.cost.threads`); a user who sets ``ACTIVE`` counts the spinning too.
``cost/fit_seconds`` stays the wall-clock figure, ``cost/fit_cpu_seconds`` the CPU one.
"""

from __future__ import annotations

import contextlib
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from tlbench.errors import ConfigError


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
    """``auto``: bf16 mixed precision on a bf16-capable GPU, fp32 elsewhere."""
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
