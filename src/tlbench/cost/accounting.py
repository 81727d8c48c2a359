"""Turn measured work into the logged cost metrics (``cost/*``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tlbench.cost.device import DeviceInfo, device_hours_rule, device_seconds


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
            "cost/device_hours": self.device_hours,
            "cost/fit_seconds": self.fit_seconds,
            "cost/fit_cpu_seconds": self.fit_cpu_seconds,
            "cost/standalone_device_hours": self.standalone_device_hours,
            "cost/train_samples": float(self.train_samples),
            "cost/images_per_second": self.images_per_second,
            "cost/peak_memory_mb": self.peak_memory_mb,
        }
        flops = {
            "cost/train_flops": self.train_flops,
            "cost/eval_flops": self.eval_flops,
            "cost/standalone_train_flops": self.standalone_train_flops,
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
