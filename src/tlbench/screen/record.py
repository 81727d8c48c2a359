"""What a screen run logs (the tracking contract for ``role=screen``), built from plain values."""

from __future__ import annotations

import math
import platform
from dataclasses import dataclass, field
from typing import Any

import torch

import tlbench
from tlbench.cost.device import DeviceInfo, device_hours
from tlbench.screen.as_is import AsIsScore
from tlbench.screen.scores import ScoreSettings, Timed

SCREEN_ROLE = "screen"
SCORE_NAMES = ("logme", "knn_loo_acc", "knn_acc", "probe_cv_acc")  # screen/<name>; plus as_is_acc


@dataclass(frozen=True)
class ScreenResult:
    """One backbone's screen: scores with their costs, and what identifies the data they are of."""

    backbone: str  # the timm model name (the trials' ``backbone`` param)
    weights: str
    dataset: str
    data_root: str
    n_per_class: str  # "all" for the whole train pool
    resolution: int
    seed: int
    n_train: int
    n_val: int
    n_classes: int
    num_features: int
    fingerprint: str
    device: DeviceInfo
    settings: ScoreSettings
    probe_folds: int  # the folds actually used
    scores: dict[str, Timed]
    as_is: AsIsScore | None
    forward_flops: float
    extract_seconds: float
    standalone_extract_seconds: float
    cache_status: str
    run_id: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def screen_seconds(self) -> float:
        """Wall seconds this screen spent: extraction (this run's) + every score."""
        extra = self.as_is.seconds if self.as_is else 0.0
        return self.extract_seconds + sum(t.seconds for t in self.scores.values()) + extra

    def value(self, name: str) -> float:
        if name == "as_is_acc":
            return self.as_is.accuracy if self.as_is else float("nan")
        return self.scores[name].value if name in self.scores else float("nan")


def screen_params(result: ScreenResult) -> dict[str, Any]:
    s = result.settings
    return {
        "backbone": result.backbone,
        "weights": result.weights,
        "dataset": result.dataset,
        "data_root": result.data_root,
        "n_per_class": result.n_per_class,
        "resolution": result.resolution,
        "seed": result.seed,
        "n_train": result.n_train,
        "n_val": result.n_val,
        "n_classes": result.n_classes,
        "num_features": result.num_features,
        "data_fingerprint": result.fingerprint,
        "knn_k": s.knn_k,
        "probe_folds": result.probe_folds,
        "probe_c": s.probe_c,
        "screen_scores": ",".join([*SCORE_NAMES, *(["as_is_acc"] if result.as_is else [])]),
    }


def screen_metrics(result: ScreenResult) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for name, timed in result.scores.items():
        if math.isfinite(timed.value):
            metrics[f"screen/{name}"] = timed.value
        metrics[f"cost/{name}_seconds"] = timed.seconds
    if result.as_is is not None:
        metrics["screen/as_is_acc"] = result.as_is.accuracy
        metrics["cost/as_is_seconds"] = result.as_is.seconds
        metrics["cost/as_is_flops"] = result.as_is.flops
    seconds = result.screen_seconds
    metrics.update(
        {
            "cost/forward_flops": result.forward_flops,
            "cost/extract_seconds": result.extract_seconds,
            "cost/standalone_extract_seconds": result.standalone_extract_seconds,
            "cost/screen_seconds": seconds,
            "cost/device_hours": device_hours(seconds, result.device.count),
        }
    )
    return metrics


def screen_tags(result: ScreenResult, extra: dict[str, str]) -> dict[str, str]:
    notes = "; ".join(result.notes) or ""
    return {
        "role": SCREEN_ROLE,
        "status": "completed",
        "device": result.device.name,
        "device_count": str(result.device.count),
        "device_model": result.device.model,
        "feature_cache": result.cache_status,
        "n_per_class": result.n_per_class,
        "tlbench_version": tlbench.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        **({"screen_notes": notes} if notes else {}),
        **extra,
    }
