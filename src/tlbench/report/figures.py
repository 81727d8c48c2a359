"""The report's figures: computed from the trials table into plain info objects (pure; axis units and
scales included, so tests check them without drawing), then drawn and saved as PNG + SVG.

Every figure says which accuracy it plots: test accuracy of final runs or validation accuracy of
tuning trials. A figure without the data it needs is a :class:`Missing` the report prints instead.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import matplotlib
import pandas as pd
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from tlbench.report.render import STRATEGY_ORDER, size_key, size_label, sorted_strategies
from tlbench.report.stats import mean_ci, pareto_front
from tlbench.report.tables import SCREEN_SCORES, final_results, groups, run_cost, tune_results
from tlbench.strategies import STRATEGIES
from tlbench.tracking import names as N

# --- what a figure is computed into -------------------------------------------------------------------------

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
    names = {str(d).lower() for d in devices if d is not None and not pd.isna(d) and str(d)}
    kinds = {{"cpu": "CPU", "mps": "MPS"}.get(name, "GPU") for name in names}
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
    """Means with 95% CI bounds per x (NaN: no value; no bounds for one value), clipped to ``bounds``
    (a t interval over a few seeds can reach past 100%, an accuracy cannot)."""
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


# --- each figure's info, from the trials table --------------------------------------------------------------


def tradeoff_info(trials: pd.DataFrame, *, cost: str, unit: CostUnit, tuning: bool = False) -> FigureInfo:
    """Accuracy against cost per run, one panel per data size: the final runs' test accuracy with the
    frontier over strategy means, or (``tuning``) every completed tuning trial's validation accuracy with
    the frontier over trials."""
    hours = cost == "device_hours"
    if tuning:
        name, title, x_label = "tradeoff_trials", "Tuning trials: accuracy vs compute time", unit.label
        data, metric, y_label, empty = tune_results(trials), N.VAL_ACC, TUNE_ACC, "no completed tuning trial"
    else:
        name = "tradeoff_device_hours" if hours else "tradeoff_flops"
        title = f"Accuracy vs {'compute time' if hours else 'training FLOPs'}"
        x_label = unit.label if hours else "training FLOPs per run"
        data, metric, y_label = final_results(trials), N.TEST_ACC, FINAL_ACC
        empty = "no completed final run with a test accuracy and a recorded cost"
    data = data.assign(run_cost=run_cost(data, cost).astype(float)).dropna(subset=["run_cost"])
    if data.empty:
        return Missing(name, title, empty, _RUN_SWEEP)
    panels = []
    for size, at_size in groups(data, "n_per_class"):
        runs, means = [], []
        for strategy, group in groups(at_size, "strategy"):
            accs = group[metric].astype(float)
            runs.append(Series(strategy, tuple(group["run_cost"]), tuple(accs)))
            if not tuning:
                mean_x = float(group["run_cost"].mean())
                means.append(series_of_means(strategy, [mean_x], [accs.tolist()], bounds=ACCURACY_BOUNDS))
        if tuning:  # every trial is a point of the frontier
            xs, ys = at_size["run_cost"].tolist(), at_size[metric].astype(float).tolist()
        else:
            xs, ys = [m.x[0] for m in means], [m.y[0] for m in means]
        frontier = tuple((xs[i], ys[i]) for i in pareto_front(xs, ys))
        panels.append(Panel(size_label(size), tuple(runs), tuple(means), frontier))
    if tuning:
        caption = (
            f"Validation accuracy of every completed tuning trial against {unit.label} (pruned and failed "
            "trials are not shown); dashed line: the Pareto frontier over trials. Test accuracy is not used "
            "for tuning."
        )
    else:
        caption = (
            f"Test accuracy of the final runs against {x_label}. Dots: single seeds; large markers: the mean "
            "over seeds with its 95% CI; dashed line: the Pareto frontier of the strategy means (no other "
            "strategy is both cheaper and more accurate). Cost per run is what the run would cost on its "
            "own: frozen features it reused from another trial of the sweep are counted."
        )
    notes = (unit.note,) if unit.note and hours and not tuning else ()
    scale = choose_scale(data["run_cost"].tolist())
    return PlotInfo(
        name, title, x_label, y_label, tuple(panels), caption, "tradeoff", scale, notes=notes,
        chance=chance_level(trials["n_classes"]), share_y=True,
    )  # fmt: skip


def _size_positions(data: pd.DataFrame) -> dict[str, float]:
    """x position of each size: n per class; ``all`` sits at the mean training images per class."""
    positions: dict[str, float] = {}
    for size, at in groups(data, "n_per_class"):
        if size == "all":
            per_class = pd.to_numeric(at["n_train"], errors="coerce") / pd.to_numeric(
                at["n_classes"], errors="coerce"
            )
            value = float(per_class.mean())
            numeric = list(positions.values())
            positions[size] = value if not math.isnan(value) else (max(numeric) * 2 if numeric else 1.0)
        else:
            try:
                positions[size] = float(size)
            except ValueError:
                continue
    return positions


def data_scaling_info(trials: pd.DataFrame) -> FigureInfo:
    """Final test accuracy against labelled images per class, per strategy, 95% CI bands over seeds."""
    name, title = "data_scaling", "Data scaling"
    data = final_results(trials)
    positions = _size_positions(data) if not data.empty else {}
    if len(positions) < 2:
        only = f" ({size_label(next(iter(positions)))})" if positions else ""
        return Missing(name, title, f"only one data size{only} has completed final runs", _HINT_SIZES)
    series, single = [], []
    for strategy, group in groups(data, "strategy"):
        sizes = [s for s in positions if (group["n_per_class"] == s).any()]
        values = [group[group["n_per_class"] == s][N.TEST_ACC].astype(float).tolist() for s in sizes]
        single += [
            f"{strategy} at {size_label(s)}" for s, v in zip(sizes, values, strict=True) if len(v) == 1
        ]
        series.append(
            series_of_means(strategy, [positions[s] for s in sizes], values, bounds=ACCURACY_BOUNDS)
        )
    ticks = tuple(
        (x, f"all (≈{x:.0f})" if s == "all" else s)
        for s, x in sorted(positions.items(), key=lambda item: item[1])
    )
    points = sum(len(s.x) for s in series)
    notes: tuple[str, ...] = ()
    if single and len(single) == points:
        notes = ("Every point is a single seed: no confidence bands can be drawn.",)
    elif single:
        notes = (f"Single seed, no confidence band: {', '.join(single)}.",)
    falling = [
        f"{s.label} ({100 * a:.1f}% → {100 * b:.1f}%)"
        for s in series
        for a, b in itertools.pairwise(y for y in s.y if not math.isnan(y))
        if a - b > FALL
    ]
    if falling:
        notes += (
            f"Falls as data grows: {'; '.join(falling)}. More labels should not hurt: see Learning curves.",
        )
    caption = (
        "Mean test accuracy of the final runs against labelled training images per class; shaded: 95% CI "
        "over seeds. Where the transfer strategies' lines meet the scratch line, transfer no longer pays."
    )
    return PlotInfo(
        name, title, "labelled images per class", FINAL_ACC, (Panel(title="", summary=tuple(series)),),
        caption, "lines", "log" if choose_scale(list(positions.values()), span=10) != "linear" else "linear",
        x_ticks=ticks, notes=notes, chance=chance_level(trials["n_classes"]),
    )  # fmt: skip


def _varying_depth(data: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    data = data.assign(k=pd.to_numeric(data["freeze_depth"], errors="coerce")).dropna(subset=["k"])
    return [
        (str(strategy), str(size), group)
        for (strategy, size), group in data.groupby(["strategy", "n_per_class"], sort=False)
        if group["k"].nunique() >= 2
    ]


def freeze_depth_info(trials: pd.DataFrame) -> FigureInfo:
    """Accuracy and device-hours against freeze depth k, per (strategy, size) that varies k: final runs
    when k is a factor with final runs, else tuning trials."""
    name, title = "freeze_depth", "Freeze depth"
    acc_col, acc_label = N.TEST_ACC, FINAL_ACC
    varying = _varying_depth(final_results(trials))
    if not varying:
        acc_col, acc_label = N.VAL_ACC, TUNE_ACC
        varying = _varying_depth(tune_results(trials))
    if not varying:
        return Missing(
            name, title, "freeze depth k takes a single value per strategy in this study", _HINT_FREEZE
        )
    strategies = sorted_strategies(s for s, _, _ in varying)
    varying.sort(key=lambda v: (strategies.index(v[0]), size_key(v[1])))
    acc_series, cost_series = [], []
    for strategy, size, group in varying:
        label = size_label(size) if len(strategies) == 1 else f"{strategy}, {size_label(size)}"
        ks = sorted(float(k) for k in group["k"].unique())
        by_k = [group[group["k"] == k] for k in ks]
        accs = [g[acc_col].astype(float).tolist() for g in by_k]
        acc_series.append(series_of_means(label, ks, accs, bounds=ACCURACY_BOUNDS))
        cost_series.append(series_of_means(label, ks, [run_cost(g, "device_hours").tolist() for g in by_k]))
    which = strategies[0] if len(strategies) == 1 else "several strategies"
    caption = (
        f"{acc_label.capitalize()} (left) and device-hours per run (right) against the number of frozen "
        f"leading parameter groups k ({which}); 0 = nothing frozen. Shaded: 95% CI over runs at the same k."
    )
    panels = (
        Panel(title="accuracy", summary=tuple(acc_series), y_label=acc_label),
        Panel(title="cost", summary=tuple(cost_series), y_label="device-hours per run"),
    )
    return PlotInfo(
        name, title, "freeze depth k (frozen leading groups)", acc_label, panels, caption, "lines",
        chance=chance_level(trials["n_classes"]),
    )  # fmt: skip


def lr_sensitivity_info(trials: pd.DataFrame) -> FigureInfo:
    """Tuning trials' validation accuracy against learning rate, per strategy, one panel per size."""
    name, title = "lr_sensitivity", "Learning-rate sensitivity"
    data = tune_results(trials)
    data = data[pd.to_numeric(data["lr"], errors="coerce") > 0]
    if data.empty or data.groupby(["strategy", "n_per_class"])["lr"].nunique().max() < 2:
        values = ", ".join(sorted({f"{float(v):g}" for v in data["lr"]})) if not data.empty else "none"
        return Missing(
            name, title, f"no strategy was tuned over more than one learning rate (lr: {values})", _HINT_LR
        )
    panels = []
    for size, at_size in groups(data, "n_per_class"):
        runs, means = [], []
        for strategy, group in groups(at_size, "strategy"):
            group = group.astype({"lr": float})
            runs.append(Series(strategy, tuple(group["lr"]), tuple(group[N.VAL_ACC].astype(float))))
            lrs = sorted(group["lr"].unique())
            if len(lrs) >= 2:
                by_lr = [group[group["lr"] == lr][N.VAL_ACC].astype(float).tolist() for lr in lrs]
                means.append(
                    series_of_means(strategy, [float(v) for v in lrs], by_lr, bounds=ACCURACY_BOUNDS)
                )
        panels.append(Panel(title=size_label(size), runs=tuple(runs), summary=tuple(means)))
    caption = (
        "Validation accuracy of completed tuning trials against the learning rate (dots: trials; lines: "
        "mean per learning rate, where a strategy was tried at several). Other tuned factors vary too, so "
        "the spread at one learning rate includes them; a flat line means the strategy is forgiving."
        + _diverged_note(trials)
    )
    return PlotInfo(
        name, title, "learning rate", TUNE_ACC, tuple(panels), caption, "lines", "log",
        chance=chance_level(trials["n_classes"]), share_y=True,
    )  # fmt: skip


def _diverged_note(trials: pd.DataFrame, *, listed: int = 6) -> str:
    """The tuning trials a learning rate wrecked (diverged or collapsed: not drawn), for the caption."""
    diverged_mask = trials[N.STATUS].astype(str).str.startswith("failed: diverged")
    mask = (trials[N.ROLE] == N.TUNE) & (diverged_mask | trials[N.COLLAPSED])
    diverged = trials[mask]
    if diverged.empty:
        return ""
    items = [
        f"{row.strategy} n={row.n_per_class} at lr {float(row.lr):.3g}"
        if pd.notna(pd.to_numeric(row.lr, errors="coerce"))
        else f"{row.strategy} n={row.n_per_class}"
        for row in diverged.itertuples()
    ]
    more = f" and {len(items) - listed} more" if len(items) > listed else ""
    return (
        f" Not drawn: {len(items)} tuning trial(s) diverged (loss non-finite or exploded) or collapsed "
        "(at chance: failed configurations), "
        f"{'; '.join(items[:listed])}{more}."
    )


FALL = 0.01  # a mean that drops by more than 1 point as data grows is called falling

_RUN_SWEEP = "run `make sweep SWEEP=smoke` (or any sweep) to create trials"
_HINT_SIZES = "run a sweep over several `data.n_per_class` values, e.g. `make sweep SWEEP=data_scaling`"
_HINT_FREEZE = "run `make sweep SWEEP=freeze_depth` (strategy=partial over several `strategy.freeze_depth`)"
_HINT_LR = "run a sweep that tunes `optimizer.lr` over a range (e.g. the default sweep: `make sweep`)"


def all_figures(trials: pd.DataFrame) -> list[FigureInfo]:
    """The report's figures, in report order."""
    unit = device_hours_unit(trials[N.DEVICE]) if not trials.empty else device_hours_unit([])
    return [
        tradeoff_info(trials, cost="device_hours", unit=unit),
        tradeoff_info(trials, cost="train_flops", unit=unit),
        data_scaling_info(trials),
        freeze_depth_info(trials),
        lr_sensitivity_info(trials),
        tradeoff_info(trials, cost="device_hours", unit=unit, tuning=True),
    ]


# --- drawing and saving -------------------------------------------------------------------------------------
# Only ``matplotlib.figure.Figure`` (no pyplot): no global state, no GUI backend, so it runs headless and
# in parallel workers. Colours and markers are fixed per strategy so every figure reads the same way.

STRATEGY_STYLE = {name: (s.colour, s.marker) for name, s in STRATEGIES.items()}
_OTHER_COLOURS = ("#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79", "#637939", "#843c39", "#7b4173")
_RC: Any = {  # typed loosely: matplotlib types rc keys as a Literal union
    "svg.hashsalt": "tlbench",  # stable element ids: the same data gives the same SVG
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def style_for(label: str, index: int) -> tuple[str, str]:
    """(colour, marker) of a series: fixed for strategies, by position for anything else."""
    for strategy, style in STRATEGY_STYLE.items():
        if label == strategy or label.startswith(f"{strategy}, "):
            return style
    return _OTHER_COLOURS[index % len(_OTHER_COLOURS)], "o"


def _draw_runs(ax: Axes, panel: Panel, styles: Styles) -> None:
    """Single runs: faint dots behind their strategy's means, the main marks where there are none."""
    summarised = {s.label for s in panel.summary}
    for series in panel.runs:
        colour, marker = styles[series.label]
        size, alpha = (14, 0.4) if series.label in summarised else (34, 0.85)
        ax.scatter(series.x, series.y, s=size, color=colour, marker=marker, alpha=alpha, linewidths=0)


def _yerr(series: Series) -> list[list[float]] | None:
    if not series.low or all(math.isnan(v) for v in series.low):
        return None
    lower = [y - lo if not math.isnan(lo) else 0.0 for y, lo in zip(series.y, series.low, strict=True)]
    upper = [hi - y if not math.isnan(hi) else 0.0 for y, hi in zip(series.y, series.high, strict=True)]
    return [lower, upper]


def _draw_tradeoff(ax: Axes, panel: Panel, styles: Styles) -> None:
    _draw_runs(ax, panel, styles)
    for series in panel.summary:
        colour, marker = styles[series.label]
        ax.errorbar(
            series.x, series.y, yerr=_yerr(series), fmt=marker, color=colour, markersize=8, capsize=3,
            markeredgecolor="white", markeredgewidth=0.8, label=series.label, zorder=3,
        )  # fmt: skip
        for x, y, low in zip(series.x, series.y, series.low, strict=False):
            if math.isnan(low):  # no interval to draw: say why right at the point
                ax.annotate(
                    "1 seed", (x, y), xytext=(6, -3), textcoords="offset points", fontsize=7, color=colour
                )
    if len(panel.frontier) >= 2:
        xs, ys = zip(*panel.frontier, strict=True)
        ax.plot(xs, ys, "--", color="black", linewidth=1, alpha=0.7, label="Pareto frontier", zorder=2)
    elif panel.frontier:
        ax.plot(*panel.frontier[0], "o", mfc="none", mec="black", markersize=13, label="Pareto frontier")


def _draw_lines(ax: Axes, panel: Panel, styles: Styles) -> None:
    _draw_runs(ax, panel, styles)
    for series in panel.summary:
        colour, marker = styles[series.label]
        ax.plot(series.x, series.y, marker=marker, color=colour, markersize=5, label=series.label, zorder=3)
        if _yerr(series) is not None:
            if len(series.x) == 1:
                ax.errorbar(series.x, series.y, yerr=_yerr(series), fmt="none", color=colour, capsize=3)
            else:
                ax.fill_between(series.x, series.low, series.high, color=colour, alpha=0.15, linewidth=0)


def _scale(ax: Axes, info: PlotInfo, panel: Panel) -> None:
    if info.x_scale == "log":
        ax.set_xscale("log")
    elif info.x_scale == "symlog":
        xs = [x for s in (*panel.runs, *panel.summary) for x in s.x if x > 0]
        ax.set_xscale("symlog", linthresh=min(xs) if xs else 1.0)
    plain = ticker.FuncFormatter(_flops_tick if "FLOPs" in info.x_label else (lambda v, _pos: f"{v:.3g}"))
    if info.x_ticks:
        ax.set_xticks([x for x, _ in info.x_ticks], [label for _, label in info.x_ticks])
        ax.xaxis.set_minor_locator(ticker.NullLocator())
    elif info.x_scale == "log":  # 1-2-5 ticks in plain numbers: a decade or two has readable labels
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.xaxis.set_major_formatter(plain)
    elif info.x_scale == "linear" or "FLOPs" in info.x_label:  # symlog keeps its own ticks, FLOPs aside
        if info.x_scale == "linear":
            ax.xaxis.set_major_locator(ticker.MaxNLocator(nbins=5))
        ax.xaxis.set_major_formatter(plain)
    ax.margins(x=0.08, y=0.08)


def _flops_tick(value: float, _pos: int | None) -> str:
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if abs(value) >= scale:
            return f"{value / scale:g}{prefix}"
    return f"{value:g}"


Styles = dict[str, tuple[str, str]]


def _styles(info: PlotInfo) -> Styles:
    """(colour, marker) per series label, fixed across the figure's panels, in first-seen order."""
    labels = list(dict.fromkeys(s.label for panel in info.panels for s in (*panel.summary, *panel.runs)))
    rank = {name: i for i, name in enumerate(STRATEGY_ORDER)}
    labels.sort(key=lambda label: rank.get(label, len(rank)))  # strategies in report order; others as seen
    return {label: style_for(label, i) for i, label in enumerate(labels)}


CHANCE_STYLE: Any = {"color": "#7f7f7f", "linestyle": ":", "linewidth": 1.2}


def _legend(info: PlotInfo, styles: Styles) -> list[Line2D]:
    """One entry per series label (the same look in every panel), then the frontier and chance."""
    line: Literal["-", "None"] = "-" if info.kind == "lines" else "None"
    handles = [
        Line2D([], [], color=colour, marker=marker, linestyle=line, markersize=6, label=label)
        for label, (colour, marker) in styles.items()
    ]
    if any(panel.frontier for panel in info.panels):
        handles.append(Line2D([], [], color="black", linestyle="--", linewidth=1, label="Pareto frontier"))
    if info.chance is not None:
        handles.append(Line2D([], [], **CHANCE_STYLE, label=f"chance ({100 * info.chance:.3g}%)"))
    return handles


def _is_accuracy(info: PlotInfo, panel: Panel) -> bool:
    return "accuracy" in (panel.y_label or info.y_label)


def _y_axis(ax: Axes, *, accuracy: bool) -> None:
    if accuracy:
        low, high = ax.get_ylim()
        if high > 1.02 or low < -0.02:  # margins past 0 or 100% show accuracies no run can have
            low, high = max(low, -0.02), min(high, 1.02)
            ax.set_ylim(low, high)
        ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0 if high - low > 0.08 else 1))
    else:
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:.3g}"))


def _grid(count: int, width: float, height: float) -> tuple[Figure, Any]:
    """A figure of ``count`` panels, at most three a row, each ``width`` x ``height`` inches."""
    ncols = min(3, count)
    nrows = math.ceil(count / ncols)
    figure = Figure(figsize=(1.6 + width * ncols, 0.6 + height * nrows), layout="constrained", dpi=100)
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.set_visible(False)
    return figure, axes


def draw(info: PlotInfo) -> Figure:
    """One figure: a panel per data size (or per quantity), a shared legend on the right."""
    count = len(info.panels)
    with matplotlib.rc_context(_RC):
        figure, axes = _grid(count, 4.0, 3.3)
        styles = _styles(info)
        for ax, panel in zip(axes, info.panels, strict=False):
            (_draw_tradeoff if info.kind == "tradeoff" else _draw_lines)(ax, panel, styles)
            if info.chance is not None and _is_accuracy(info, panel):
                ax.axhline(info.chance, **CHANCE_STYLE, zorder=1)
            _scale(ax, info, panel)
            ax.set_ylabel(panel.y_label or info.y_label)
            ax.set_xlabel(info.x_label)
            if panel.title:
                ax.set_title(panel.title)
            ax.grid(True, alpha=0.3, linewidth=0.6)
        used = axes[:count]
        if info.share_y and count > 1:  # panels that are compared read off one scale
            limits = [ax.get_ylim() for ax in used]
            for ax in used:
                ax.set_ylim(min(lo for lo, _ in limits), max(hi for _, hi in limits))
        for ax, panel in zip(used, info.panels, strict=True):
            _y_axis(ax, accuracy=_is_accuracy(info, panel))
        handles = _legend(info, styles)
        if handles:
            figure.legend(handles=handles, loc="outside right upper", frameon=False)
        figure.suptitle(info.title, fontsize=11, fontweight="bold")
    return figure


def save(figure: Figure, directory: Path, stem: str) -> tuple[Path, Path]:
    """PNG (150 dpi, for HTML and Markdown) and SVG (for papers); metadata without dates, so the same
    study gives the same files.
    """
    directory.mkdir(parents=True, exist_ok=True)
    png, svg = directory / f"{stem}.png", directory / f"{stem}.svg"
    with matplotlib.rc_context(_RC):
        figure.savefig(png, dpi=150, metadata={"Software": None})
        figure.savefig(svg, metadata={"Date": None, "Creator": None})
    return png, svg


# --- the screen-vs-training figure --------------------------------------------------------------------------

SCREEN_FIGURE = "screen_vs_training"


@dataclass(frozen=True)
class ScorePanel:
    score: str
    label: str
    points: tuple[tuple[str, str, float, float], ...]  # (strategy, backbone, screen score, test acc)


@dataclass(frozen=True)
class ScreenFigureInfo:
    title: str
    panels: tuple[ScorePanel, ...]


def _short(backbone: str) -> str:
    return backbone.removeprefix("tf_").replace("efficientnet_", "effnet-")


def screen_figure_info(screen: pd.DataFrame, trained: pd.DataFrame) -> ScreenFigureInfo | None:
    """One panel per logged screen score: every (backbone, strategy) at (score, mean test accuracy)."""
    panels = []
    for score, label in SCREEN_SCORES.items():
        if score not in screen or screen[score].isna().all():
            continue
        merged = trained.merge(screen[["backbone", score]], on="backbone").dropna(subset=[score])
        points = tuple(
            (str(r.strategy), str(r.backbone), float(r.score), float(r.test_acc))
            for r in merged.rename(columns={score: "score"}).itertuples()
        )
        if points:
            panels.append(ScorePanel(score, label, points))
    if not panels:
        return None
    return ScreenFigureInfo("Screen score against final test accuracy (one line per strategy)", tuple(panels))


def draw_screen(info: ScreenFigureInfo) -> Figure:
    with matplotlib.rc_context({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False}):
        figure, axes = _grid(len(info.panels), 3.6, 3.0)
        strategies = sorted({p[0] for panel in info.panels for p in panel.points})
        for ax, panel in zip(axes, info.panels, strict=False):
            for index, strategy in enumerate(strategies):
                pts = sorted((x, y, b) for s, b, x, y in panel.points if s == strategy)
                if not pts:
                    continue
                colour, marker = style_for(strategy, index)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colour, marker=marker, label=strategy)
                for x, y, backbone in pts:
                    ax.annotate(
                        _short(backbone), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7
                    )
            ax.set_xlabel(panel.label)
            ax.set_ylabel("final test accuracy")
            ax.grid(True, alpha=0.3, linewidth=0.6)
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            figure.legend(handles, labels, loc="outside right upper", frameon=False)
        figure.suptitle(info.title, fontsize=11, fontweight="bold")
    return figure
