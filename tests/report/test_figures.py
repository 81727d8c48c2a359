"""The figures' info (what each shows, axes, chance, shared ranges), checked without drawing where it can."""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
import pytest

from tlbench.report.figures import (
    FINAL_ACC,
    TUNE_ACC,
    Missing,
    PlotInfo,
    all_figures,
    choose_scale,
    data_scaling_info,
    device_hours_unit,
    freeze_depth_info,
    lr_sensitivity_info,
    tradeoff_info,
)

Trials = Callable[..., pd.DataFrame]


@pytest.mark.parametrize(
    ("devices", "label", "mixed"),
    [
        (["cpu", "cpu"], "device-hours (CPU) per run", False),  # CPU: never called GPU-hours
        (["NVIDIA H100 80GB HBM3"], "GPU-hours per run", False),  # a GPU name: GPU-hours
        (["NVIDIA A100", "NVIDIA H100"], "GPU-hours per run", False),  # different GPUs are still GPU-hours
        (["mps"], "device-hours (MPS) per run", False),
        (["cpu", "NVIDIA H100"], "device-hours per run (mixed: CPU, GPU)", True),  # mixed: said, with a note
        ([None, ""], "device-hours per run (device not recorded)", False),
    ],
)
def test_device_axis_label(devices: list, label: str, mixed: bool) -> None:
    unit = device_hours_unit(devices)
    assert unit.label == label and bool(unit.note) == mixed


@pytest.mark.parametrize(
    ("values", "scale"),
    [
        ([1.0, 2.0, 9.0], "linear"),  # under a decade
        ([1.0, 2.0, 50.0], "log"),  # 50x: on a linear axis the cheap ones would share the leftmost pixels
        ([0.001, 0.5], "log"),  # 500x
        ([0.0, 0.001, 0.5], "symlog"),  # a zero-cost strategy among them: log cannot show it
        ([5.0], "linear"),  # one value
    ],
)
def test_choose_scale(values: list[float], scale: str) -> None:
    assert choose_scale(values) == scale


def _two_sizes(trials: Trials) -> pd.DataFrame:
    rows = [
        {"strategy": s, "n": n, "seed": seed, "test_acc": acc + 0.01 * seed, "hours": h, "flops": h * 1e15}
        for s, n, acc, h in [("linear_probe", "10", 0.8, 0.001), ("full_finetune", "10", 0.85, 0.004),
                             ("scratch", "10", 0.4, 0.003), ("linear_probe", "all", 0.9, 0.002)]
        for seed in range(3)
    ]  # fmt: skip
    rows.append(
        {"role": "tune", "strategy": "scratch", "n": "10", "test_acc": 0.99, "val_acc": 0.3, "hours": 9}
    )
    return trials(*rows)


def test_tradeoff_panels_and_frontier(trials: Trials) -> None:
    info = tradeoff_info(_two_sizes(trials), cost="device_hours", unit=device_hours_unit(["cpu"]))
    assert isinstance(info, PlotInfo)
    # one panel per data size, labelled like the table
    assert [p.title for p in info.panels] == ["n=10/class", "all data"]
    n10 = info.panels[0]
    # means per strategy; the tuning trial's test accuracy of 0.99 is nowhere
    assert {s.label: s.y[0] for s in n10.summary} == pytest.approx(
        {"linear_probe": 0.81, "full_finetune": 0.86, "scratch": 0.41}
    )
    # scratch costs more than the probe for less accuracy: not on the frontier
    assert [x for x, _ in n10.frontier] == [0.001, 0.004]
    assert [y for _, y in n10.frontier] == pytest.approx([0.81, 0.86])
    assert info.y_label == FINAL_ACC and info.x_label == "device-hours (CPU) per run"


def test_tradeoff_without_final_runs_is_missing(trials: Trials) -> None:
    info = tradeoff_info(
        trials({"role": "tune", "val_acc": 0.5}), cost="train_flops", unit=device_hours_unit([])
    )
    # explained, not an empty plot
    assert isinstance(info, Missing) and "no completed final run" in info.reason


def test_data_scaling_positions_all_at_images_per_class(trials: Trials) -> None:
    table = _two_sizes(trials)
    table.loc[table["n_per_class"] == "all", ["n_train", "n_classes"]] = [500, 10]
    info = data_scaling_info(table)
    assert isinstance(info, PlotInfo)
    # "all" sits at n_train / n_classes = 50 images per class, and its tick says so
    assert info.x_ticks == ((10.0, "10"), (50.0, "all (≈50)"))
    probe = next(s for s in info.panels[0].summary if s.label == "linear_probe")
    assert probe.x == (10.0, 50.0) and not math.isnan(probe.low[0])  # 3 seeds: a band


def test_data_scaling_with_one_size_is_missing(trials: Trials) -> None:
    info = data_scaling_info(trials({"test_acc": 0.5}, {"strategy": "scratch", "test_acc": 0.4}))
    # the note names the size there is and how to get more
    assert isinstance(info, Missing) and "n=10/class" in info.reason and "n_per_class" in info.hint


def test_freeze_depth_prefers_final_runs_then_tuning(trials: Trials) -> None:
    tuned = [
        {"role": "tune", "strategy": "partial", "freeze_depth": k, "val_acc": 0.9 - k / 10, "hours": 4 - k}
        for k in (1, 2, 3)
    ]
    info = freeze_depth_info(trials(*tuned))
    # k only varied in tuning: validation accuracy, and the label says so
    assert isinstance(info, PlotInfo) and info.y_label == TUNE_ACC
    assert info.panels[0].summary[0].x == (1.0, 2.0, 3.0) and info.panels[1].summary[0].y == (3.0, 2.0, 1.0)
    final = [{"strategy": "partial", "freeze_depth": k, "test_acc": 0.5, "hours": 1} for k in (0, 4)]
    # final runs at several k: test accuracy wins
    assert freeze_depth_info(trials(*tuned, *final)).y_label == FINAL_ACC  # type: ignore[union-attr]


def test_freeze_depth_single_value_is_missing(trials: Trials) -> None:
    info = freeze_depth_info(trials({"freeze_depth": 2, "test_acc": 0.5}))
    # the note tells the user which sweep would fill it
    assert isinstance(info, Missing) and "SWEEP=freeze_depth" in info.hint


def test_lr_sensitivity(trials: Trials) -> None:
    rows = [{"role": "tune", "lr": lr, "val_acc": acc} for lr, acc in ((1e-3, 0.5), (1e-2, 0.7), (1e-2, 0.9))]
    info = lr_sensitivity_info(trials(*rows))
    assert isinstance(info, PlotInfo) and info.x_scale == "log" and info.y_label == TUNE_ACC
    # dots for all three trials, the line through the mean per learning rate
    line = info.panels[0].summary[0]
    assert (
        len(info.panels[0].runs[0].x) == 3 and line.x == (1e-3, 1e-2) and line.y == pytest.approx((0.5, 0.8))
    )


def test_lr_sensitivity_names_the_diverged_trials(trials: Trials) -> None:
    # a learning rate that wrecked training leaves no accuracy to plot: the caption says where it happened
    rows = [{"role": "tune", "lr": lr, "val_acc": acc} for lr, acc in ((1e-3, 0.5), (1e-2, 0.7))]
    diverged = {"role": "tune", "lr": 3.0, "status": "failed: diverged: training loss exploded to 900"}
    crashed = {"role": "tune", "lr": 1e-4, "status": "failed: error: boom"}
    info = lr_sensitivity_info(trials(*rows, diverged, crashed))
    assert isinstance(info, PlotInfo)
    assert "Not drawn: 1 tuning trial(s) diverged" in info.caption
    assert "linear_probe n=10 at lr 3." in info.caption
    clean = lr_sensitivity_info(trials(*rows))
    assert isinstance(clean, PlotInfo) and "diverged" not in clean.caption


def test_lr_sensitivity_with_one_lr_is_missing(trials: Trials) -> None:
    info = lr_sensitivity_info(trials({"role": "tune", "lr": 0.003, "val_acc": 0.5}))
    # the note names the one learning rate there was
    assert isinstance(info, Missing) and "0.003" in info.reason


def test_all_figures_of_an_empty_study_are_missing(trials: Trials) -> None:
    # no trial at all: every figure explains itself, none raises
    assert all(isinstance(f, Missing) for f in all_figures(trials().iloc[0:0]))


def test_accuracy_figures_draw_chance_share_y_and_clip_intervals(trials: Trials) -> None:
    rows = [
        {"strategy": s, "n": n, "seed": seed, "test_acc": acc, "hours": h, "n_classes": 10}
        for s, n, h, accs in [("linear_probe", "10", 0.001, (0.99, 1.0, 1.0)),
                              ("scratch", "10", 0.02, (0.3,) * 3),
                              ("linear_probe", "all", 0.002, (0.9, 0.91, 0.92))]
        for seed, acc in enumerate(accs)
    ]  # fmt: skip
    info = tradeoff_info(trials(*rows), cost="device_hours", unit=device_hours_unit(["cpu"]))
    assert isinstance(info, PlotInfo)
    # chance is 1 / 10 classes; the size panels compare one quantity: one y range; costs span 20x: log
    assert info.chance == pytest.approx(0.1) and info.share_y and info.x_scale == "log"
    probe = next(s for s in info.panels[0].summary if s.label == "linear_probe")
    # the t interval of (0.99, 1, 1) reaches past 100%: clipped, an accuracy cannot
    assert probe.high == (1.0,) and probe.low[0] < probe.y[0]
    from tlbench.report.figures import draw

    figure = draw(info)
    left, right = figure.axes[:2]
    # both panels on one y scale; a dotted chance line at 10% on each
    assert left.get_ylim() == right.get_ylim() and left.get_ylim()[1] <= 1.02 and left.get_ylim()[0] >= -0.02
    assert any(list(line.get_ydata()) == [0.1, 0.1] for line in left.get_lines())


def test_chance_needs_one_class_count(trials: Trials) -> None:
    rows = [
        {"strategy": "scratch", "n": "10", "seed": s, "test_acc": 0.5, "hours": 0.1, "n_classes": k}
        for s, k in ((0, 2), (1, 3))
    ]
    info = tradeoff_info(trials(*rows), cost="device_hours", unit=device_hours_unit(["cpu"]))
    # two class counts (two datasets?): no single chance line rather than a wrong one
    assert isinstance(info, PlotInfo) and info.chance is None
