"""Draw :class:`~tlbench.report.figures_data.PlotInfo` objects with matplotlib and save PNG + SVG.

Only ``matplotlib.figure.Figure`` is used (no pyplot): no global figure state, no GUI backend, so it
runs headless and in parallel workers. Colours and markers are fixed per strategy so that every
figure of a report (and of different reports) reads the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import (
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    NullLocator,
    PercentFormatter,
)

from tlbench.report.figure_info import Panel, PlotInfo, Series
from tlbench.report.formatting import STRATEGY_ORDER
from tlbench.strategies import STRATEGIES

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


def _finite(values: Sequence[float]) -> list[bool]:
    return [not math.isnan(v) for v in values]


def _draw_runs(ax: Axes, panel: Panel, styles: Styles) -> None:
    """Single runs: faint dots behind their strategy's means, the main marks where there are none."""
    summarised = {s.label for s in panel.summary}
    for series in panel.runs:
        colour, marker = styles[series.label]
        size, alpha = (14, 0.4) if series.label in summarised else (34, 0.85)
        ax.scatter(series.x, series.y, s=size, color=colour, marker=marker, alpha=alpha, linewidths=0)


def _yerr(series: Series) -> list[list[float]] | None:
    if not series.low or not any(_finite(series.low)):
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
        if series.low and any(_finite(series.low)):
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
    if info.x_ticks:
        ax.set_xticks([x for x, _ in info.x_ticks], [label for _, label in info.x_ticks])
        ax.xaxis.set_minor_locator(NullLocator())
    elif info.x_integer:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    elif info.x_scale == "log":  # 1-2-5 ticks in plain numbers: a decade or two has readable labels
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(NullFormatter())
        plain = _flops_tick if "FLOPs" in info.x_label else (lambda v, _pos: f"{v:.3g}")
        ax.xaxis.set_major_formatter(FuncFormatter(plain))
    elif "FLOPs" in info.x_label:
        ax.xaxis.set_major_formatter(FuncFormatter(_flops_tick))
    if info.x_scale == "linear" and not info.x_ticks and not info.x_integer:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        if "FLOPs" not in info.x_label:
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.3g}"))
    ax.margins(x=0.08, y=0.08)


def _flops_tick(value: float, _pos: int | None) -> str:
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if abs(value) >= scale:
            return f"{value / scale:g}{prefix}"
    return f"{value:g}"


Styles = dict[str, tuple[str, str]]


def _styles(info: PlotInfo) -> Styles:
    """(colour, marker) per series label, fixed across the figure's panels, in first-seen order."""
    labels: list[str] = []
    for panel in info.panels:
        for series in (*panel.summary, *panel.runs):
            if series.label not in labels:
                labels.append(series.label)
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
        if high > 1.02:  # margins past 100% show an accuracy no run can have
            high = 1.02
            ax.set_ylim(low, high)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0 if high - low > 0.08 else 1))
    else:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.3g}"))


def draw(info: PlotInfo) -> Figure:
    """One figure: a panel per data size (or per quantity), a shared legend on the right."""
    count = len(info.panels)
    ncols = min(3, count)
    nrows = math.ceil(count / ncols)
    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=(1.6 + 4.0 * ncols, 0.6 + 3.3 * nrows), layout="constrained", dpi=100)
        axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
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
        for ax in axes[count:]:
            ax.set_visible(False)
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
