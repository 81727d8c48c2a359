"""Which device a trial runs on, and what "device-hours" means.

device-hours = wall-clock seconds of the fit phase × number of devices / 3600, whatever the device.
On a GPU these are GPU-hours; the ``device`` tag says which device they were spent on.
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


def device_hours(fit_seconds: float, device_count: int) -> float:
    """The one definition of device-hours (GPU-hours on a GPU)."""
    if fit_seconds < 0 or device_count < 1:
        raise ValueError(f"invalid {fit_seconds=} or {device_count=}")
    return fit_seconds * device_count / 3600.0


def autocast_context(device_type: str, precision: str) -> contextlib.AbstractContextManager[object]:
    """Mixed precision matching the training precision (a no-op for fp32), for forward passes outside
    Lightning (feature extraction, evaluation)."""
    if precision.startswith("bf16"):
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return torch.autocast(device_type=device_type, dtype=torch.float16)
    return contextlib.nullcontext()
