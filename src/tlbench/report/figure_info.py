"""The plain objects a figure is computed into (pure), and the choices shared by all figures.

Axis units and scales are decided here, from the data, so that tests can check them without drawing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from tlbench.report.stats import mean_ci

FINAL_ACC = "test accuracy (final runs)"
TUNE_ACC = "validation accuracy (tuning trials)"


@dataclass(frozen=True)
class Series:
    """One labelled line or point set; ``low``/``high`` bound a 95% CI where there is one (else NaN)."""

    label: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()


@dataclass(frozen=True)
class Panel:
    title: str
    runs: tuple[Series, ...] = ()  # single runs, drawn as small dots
    summary: tuple[Series, ...] = ()  # means (with CI), drawn as markers/lines
    frontier: tuple[tuple[float, float], ...] = ()
    y_label: str | None = None  # overrides the figure's y label for this panel


@dataclass(frozen=True)
class PlotInfo:
    name: str  # file stem
    title: str
    x_label: str
    y_label: str
    panels: tuple[Panel, ...]
    caption: str
    kind: str  # tradeoff (markers + error bars + frontier) | lines (lines + CI bands)
    x_scale: str = "linear"  # linear | log | symlog
    x_ticks: tuple[tuple[float, str], ...] = ()
    x_integer: bool = False  # integer ticks (freeze depth)
    notes: tuple[str, ...] = field(default_factory=tuple)  # caveats printed under the figure
    chance: float | None = None  # accuracy of guessing (1 / classes), drawn on accuracy panels
    share_y: bool = False  # panels compare the same quantity: one y range for all


@dataclass(frozen=True)
class Missing:
    name: str
    title: str
    reason: str
    hint: str


FigureInfo = PlotInfo | Missing


@dataclass(frozen=True)
class CostUnit:
    label: str  # axis label, e.g. "GPU-hours per run"
    unit: str  # in sentences: "GPU-hours" | "device-hours"
    note: str = ""  # a caveat (mixed devices)


def device_hours_unit(devices: Iterable[object]) -> CostUnit:
    """GPU-hours on GPUs, "device-hours (CPU)" on CPUs; mixed devices are named, not silently summed."""
    kinds = set()
    for device in devices:
        if device is None or pd.isna(device) or not str(device):
            continue
        name = str(device).lower()
        kinds.add("CPU" if name == "cpu" else "MPS" if name == "mps" else "GPU")
    if kinds == {"GPU"}:
        return CostUnit("GPU-hours per run", "GPU-hours")
    if len(kinds) == 1:
        kind = kinds.pop()
        return CostUnit(f"device-hours ({kind}) per run", "device-hours")
    if not kinds:
        return CostUnit("device-hours per run (device not recorded)", "device-hours")
    mixed = ", ".join(sorted(kinds))
    return CostUnit(
        f"device-hours per run (mixed: {mixed})",
        "device-hours",
        note=f"Runs of this study used different devices ({mixed}): their device-hours are not comparable.",
    )


def choose_scale(values: Sequence[float], *, span: float = 10) -> str:
    """log when positive values span ``span``× (a decade) or more, else three strategies can share the
    leftmost pixels; symlog when zeros (e.g. ``as_is``) sit among them."""
    clean = [v for v in values if not math.isnan(v)]
    positive = [v for v in clean if v > 0]
    if len(positive) < 2 or max(positive) / min(positive) < span:
        return "linear"
    return "log" if len(positive) == len(clean) else "symlog"


ACCURACY_BOUNDS = (0.0, 1.0)


def series_of_means(
    label: str,
    xs: Sequence[float],
    groups: Sequence[Sequence[float]],
    *,
    bounds: tuple[float, float] | None = None,
) -> Series:
    """Means with 95% CI bounds per x; NaN where a group has no value, NaN bounds for a single value.

    ``bounds`` clip the interval (an accuracy's is ``ACCURACY_BOUNDS``: a t interval over a few seeds
    can reach past 100%, an accuracy cannot).
    """
    lowest, highest = bounds if bounds is not None else (-math.inf, math.inf)
    y, low, high = [], [], []
    for group in groups:
        clean = [v for v in group if not math.isnan(v)]
        estimate = mean_ci(clean) if clean else None
        y.append(estimate.mean if estimate else math.nan)
        low.append(max(lowest, estimate.low) if estimate and estimate.low is not None else math.nan)
        high.append(min(highest, estimate.high) if estimate and estimate.high is not None else math.nan)
    return Series(label=label, x=tuple(xs), y=tuple(y), low=tuple(low), high=tuple(high))


def chance_level(n_classes: Iterable[object]) -> float | None:
    """1 / classes when the study has one class count (else None: no single chance line)."""
    counts = {int(float(str(v))) for v in n_classes if v is not None and not pd.isna(v) and str(v) != ""}
    return 1.0 / counts.pop() if len(counts) == 1 and min(counts) >= 2 else None
