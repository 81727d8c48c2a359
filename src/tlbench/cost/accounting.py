"""Turn measured work into the logged cost metrics (``cost/*``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tlbench.cost.device import DeviceInfo, device_hours


@dataclass(frozen=True)
class PhaseWork:
    """Training samples processed in a phase, and the measured FLOPs of one sample's step."""

    name: str
    samples: int
    flops_per_sample: float  # forward + backward, frozen layers honoured


@dataclass(frozen=True)
class TrialCost:
    fit_seconds: float
    device_hours: float
    train_flops: float  # training forward+backward actually performed (+ one-off feature extraction)
    eval_flops: float  # validation and test forward passes
    train_samples: int
    images_per_second: float  # training samples / fit seconds (validation time included in fit)
    peak_memory_mb: float
    memory_kind: str
    device: DeviceInfo

    def metrics(self) -> dict[str, float]:
        return {
            "cost/device_hours": self.device_hours,
            "cost/fit_seconds": self.fit_seconds,
            "cost/train_flops": self.train_flops,
            "cost/eval_flops": self.eval_flops,
            "cost/train_samples": float(self.train_samples),
            "cost/images_per_second": self.images_per_second,
            "cost/peak_memory_mb": self.peak_memory_mb,
        }


def trial_cost(
    *,
    fit_seconds: float,
    phases: Sequence[PhaseWork],
    extraction_flops: float,
    eval_flops: float,
    peak_memory_mb: float,
    memory_kind: str,
    device: DeviceInfo,
) -> TrialCost:
    samples = sum(p.samples for p in phases)
    train_flops = extraction_flops + sum(p.samples * p.flops_per_sample for p in phases)
    return TrialCost(
        fit_seconds=fit_seconds,
        device_hours=device_hours(fit_seconds, device.count),
        train_flops=train_flops,
        eval_flops=eval_flops,
        train_samples=samples,
        images_per_second=samples / fit_seconds if fit_seconds > 0 else 0.0,
        peak_memory_mb=peak_memory_mb,
        memory_kind=memory_kind,
        device=device,
    )
