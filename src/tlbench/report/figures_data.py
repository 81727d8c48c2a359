"""What each figure shows, as plain info objects computed from the trials table (pure; drawing is apart).

Every figure says which accuracy it plots: test accuracy of final runs (trade-off, data scaling, and
freeze depth when k is a final factor) or validation accuracy of tuning trials (LR sensitivity,
trade-off by trial, freeze depth when k was only tuned). A figure without the data it needs becomes a
:class:`Missing` that the report prints instead of an empty plot.
"""

from __future__ import annotations

import itertools
import math

import pandas as pd

from tlbench.report.figure_info import (
    ACCURACY_BOUNDS,
    FINAL_ACC,
    TUNE_ACC,
    CostUnit,
    FigureInfo,
    Missing,
    Panel,
    PlotInfo,
    Series,
    chance_level,
    choose_scale,
    device_hours_unit,
    series_of_means,
)
from tlbench.report.formatting import size_key, size_label, sorted_sizes, sorted_strategies
from tlbench.report.stats import pareto_front
from tlbench.report.summarize import TUNE, final_results, run_cost, tune_results

__all__ = [
    "FINAL_ACC", "TUNE_ACC", "CostUnit", "FigureInfo", "Missing", "PlotInfo", "all_figures", "choose_scale",
    "data_scaling_info", "device_hours_unit", "freeze_depth_info", "lr_sensitivity_info", "tradeoff_info",
    "tuning_tradeoff_info",
]  # fmt: skip


def tradeoff_info(trials: pd.DataFrame, *, cost: str, unit: CostUnit) -> FigureInfo:
    """Final test accuracy against cost per run, one panel per data size, frontier over strategy means."""
    column = "run_cost"
    name, x_label = (
        ("tradeoff_device_hours", unit.label)
        if cost == "device_hours"
        else ("tradeoff_flops", "training FLOPs per run")
    )
    title = f"Accuracy vs {'compute time' if cost == 'device_hours' else 'training FLOPs'}"
    data = final_results(trials)
    data = data.assign(run_cost=run_cost(data, cost))
    data = data[data[column].notna()]
    if data.empty:
        return Missing(
            name, title, "no completed final run with a test accuracy and a recorded cost", _RUN_SWEEP
        )
    panels = []
    for size in sorted_sizes(data["n_per_class"]):
        at_size = data[data["n_per_class"] == size]
        runs, means = [], []
        for strategy in sorted_strategies(at_size["strategy"]):
            group = at_size[at_size["strategy"] == strategy]
            runs.append(
                Series(strategy, tuple(group[column].astype(float)), tuple(group["test/acc"].astype(float)))
            )
            mean_x = float(group[column].astype(float).mean())
            accs = [group["test/acc"].astype(float).tolist()]
            means.append(series_of_means(strategy, [mean_x], accs, bounds=ACCURACY_BOUNDS))
        front = pareto_front([m.x[0] for m in means], [m.y[0] for m in means])
        panels.append(
            Panel(
                title=size_label(size),
                runs=tuple(runs),
                summary=tuple(means),
                frontier=tuple((means[i].x[0], means[i].y[0]) for i in front),
            )
        )
    caption = (
        f"Test accuracy of the final runs against {x_label}. Dots: single seeds; large markers: the mean "
        "over seeds with its 95% CI; dashed line: the Pareto frontier of the strategy means (no other "
        "strategy is both cheaper and more accurate). Cost per run is what the run would cost on its own: "
        "frozen features it reused from another trial of the sweep are counted."
    )
    notes = (unit.note,) if unit.note and cost == "device_hours" else ()
    all_x = data[column].astype(float).tolist()
    return PlotInfo(
        name, title, x_label, FINAL_ACC, tuple(panels), caption, "tradeoff", choose_scale(all_x), notes=notes,
        chance=chance_level(trials["n_classes"]), share_y=True,
    )  # fmt: skip


def tuning_tradeoff_info(trials: pd.DataFrame, *, unit: CostUnit) -> FigureInfo:
    """Every completed tuning trial: validation accuracy against device-hours, frontier over trials."""
    name, title = "tradeoff_trials", "Tuning trials: accuracy vs compute time"
    data = tune_results(trials)
    data = data.assign(run_cost=run_cost(data, "device_hours"))
    data = data[data["run_cost"].notna()]
    if data.empty:
        return Missing(name, title, "no completed tuning trial", _RUN_SWEEP)
    panels = []
    for size in sorted_sizes(data["n_per_class"]):
        at_size = data[data["n_per_class"] == size]
        runs = tuple(
            Series(s, tuple(g["run_cost"].astype(float)), tuple(g["val/acc"].astype(float)))
            for s in sorted_strategies(at_size["strategy"])
            for g in [at_size[at_size["strategy"] == s]]
        )
        xs, ys = (
            at_size["run_cost"].astype(float).tolist(),
            at_size["val/acc"].astype(float).tolist(),
        )
        front = tuple((xs[i], ys[i]) for i in pareto_front(xs, ys))
        panels.append(Panel(title=size_label(size), runs=runs, frontier=front))
    caption = (
        f"Validation accuracy of every completed tuning trial against {unit.label} (pruned and failed "
        "trials are not shown); dashed line: the Pareto frontier over trials. Test accuracy is not used "
        "for tuning."
    )
    xs_all = data["run_cost"].astype(float).tolist()
    return PlotInfo(
        name, title, unit.label, TUNE_ACC, tuple(panels), caption, "tradeoff", choose_scale(xs_all),
        chance=chance_level(trials["n_classes"]), share_y=True,
    )  # fmt: skip


def _size_positions(data: pd.DataFrame) -> dict[str, float]:
    """x position of each size: n per class; ``all`` sits at the mean training images per class."""
    positions: dict[str, float] = {}
    for size in sorted_sizes(data["n_per_class"]):
        if size == "all":
            at = data[data["n_per_class"] == "all"]
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
    for strategy in sorted_strategies(data["strategy"]):
        group = data[data["strategy"] == strategy]
        sizes = [s for s in positions if (group["n_per_class"] == s).any()]
        values = [group[group["n_per_class"] == s]["test/acc"].astype(float).tolist() for s in sizes]
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
    """Accuracy and device-hours against freeze depth k, per (strategy, size) that varies k.

    Final runs (test accuracy) when k is a factor with final runs, else tuning trials (validation).
    """
    name, title = "freeze_depth", "Freeze depth"
    acc_col, acc_label = "test/acc", FINAL_ACC
    varying = _varying_depth(final_results(trials))
    if not varying:
        acc_col, acc_label = "val/acc", TUNE_ACC
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
    for size in sorted_sizes(data["n_per_class"]):
        at_size = data[data["n_per_class"] == size]
        runs, means = [], []
        for strategy in sorted_strategies(at_size["strategy"]):
            group = at_size[at_size["strategy"] == strategy].astype({"lr": float})
            runs.append(Series(strategy, tuple(group["lr"]), tuple(group["val/acc"].astype(float))))
            lrs = sorted(group["lr"].unique())
            if len(lrs) >= 2:
                by_lr = [group[group["lr"] == lr]["val/acc"].astype(float).tolist() for lr in lrs]
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
    """The tuning trials a learning rate wrecked (diverged or collapsed: failed, not drawn), named in the
    caption."""
    diverged_mask = trials["status"].astype(str).str.startswith("failed: diverged")
    mask = (trials["role"] == TUNE) & (diverged_mask | trials["collapsed"])
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
    unit = device_hours_unit(trials["device"]) if not trials.empty else device_hours_unit([])
    return [
        tradeoff_info(trials, cost="device_hours", unit=unit),
        tradeoff_info(trials, cost="train_flops", unit=unit),
        data_scaling_info(trials),
        freeze_depth_info(trials),
        lr_sensitivity_info(trials),
        tuning_tradeoff_info(trials, unit=unit),
    ]
