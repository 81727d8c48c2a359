"""The methods section, written from what the runs logged (not from what the config meant to do)."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

from tlbench.report.document import Block, Bullets, Heading, Paragraph, Table
from tlbench.report.formatting import pp, seconds, si, sig, size_label, sorted_sizes
from tlbench.report.inputs import ReportInputs
from tlbench.report.summarize import FINAL, TUNE, Totals
from tlbench.tracking.study_reader import redact_uri

_TRAINING = ("optimizer", "schedule", "epochs", "batch_size", "weight_decay", "head", "precision", "augment")


def _values(values: pd.Series, *, limit: int = 4) -> str:
    seen = sorted({str(v) for v in values.dropna() if str(v) not in {"", "<NA>"}})
    if not seen:
        return "not recorded"
    shown = ", ".join(f"`{v}`" for v in seen[:limit])
    return shown if len(seen) <= limit else f"{shown} and {len(seen) - limit} more"


def _range(counts: pd.Series) -> str:
    if counts.empty:
        return "0"
    low, high = int(counts.min()), int(counts.max())
    return str(low) if low == high else f"{low}–{high}"


def _per_cell(trials: pd.DataFrame, role: str, *, completed: bool = False) -> pd.Series:
    rows = trials[trials["role"] == role]
    if completed:
        rows = rows[rows["outcome"] == "completed"]
    return rows.groupby(["strategy", "n_per_class"]).size()


def _when(ms: int | None) -> str:
    if ms is None:
        return "unknown"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _train_sizes(trials: pd.DataFrame) -> str:
    parts = []
    for size in sorted_sizes(trials["n_per_class"]):
        n_train = trials[trials["n_per_class"] == size]["n_train"]
        parts.append(f"{size_label(size)} → {_values(n_train)}")
    return "; ".join(parts) if parts else "not recorded"


def methods_section(inp: ReportInputs, totals: Totals) -> list[Block]:
    t = inp.trials
    lrs = pd.to_numeric(t["lr"], errors="coerce").dropna()
    lr_text = f"{lrs.min():.3g}–{lrs.max():.3g}" if len(lrs) and lrs.min() != lrs.max() else _values(t["lr"])
    training = "; ".join(f"{name} {_values(t[name])}" for name in _TRAINING)
    role_hours = ", ".join(
        f"{role or '(no role)'} {sig(h)}" for role, h in totals.device_hours_by_role.items()
    )
    bullets = (
        f"**Backbone:** {_values(t['backbone'])}, initial weights {_values(t['weights'])} "
        f"(freeze groups: {_values(t['freeze_groups'])}).",
        f"**Dataset:** {_values(t['dataset'])} at {_values(t['resolution'])} px, "
        f"{_values(t['n_classes'])} classes "
        f"(data fingerprint {_values(t['data_fingerprint'])}). Validation {_values(t['n_val'])} and test "
        f"{_values(t['n_test'])} images, the same for every data size and seed (split seed "
        f"{_values(t['split_seed'])}). Training images: {_train_sizes(t)}.",
        f"**Protocol:** per strategy × data size, {_range(_per_cell(t, TUNE))} tuning trials chose the "
        f"configuration on validation accuracy (learning rate {lr_text}); the best configuration was "
        f"re-trained with {_range(_per_cell(t, FINAL))} final seed(s) per cell "
        f"({_range(_per_cell(t, FINAL, completed=True))} completed), each evaluated once on the test set.",
        f"**Training:** {training}.",
        f"**Statistics:** means over final seeds with two-sided 95% Student-t intervals (n−1 degrees of "
        f"freedom); no interval from a single seed. Recommendation tolerance: {pp(inp.tolerance)} "
        "(absolute accuracy).",
        f"**Hardware:** device {_values(t['device'])} ({_values(t['device_model'])}), "
        f"{_values(t['device_count'])} device(s) per trial. Device-hours = fit wall-clock seconds × devices "
        "/ 3600 (GPU-hours on a GPU).",
        f"**Software:** tlbench {_values(t['tlbench_version'])}, torch {_values(t['torch_version'])}, "
        f"Python {_values(t['python_version'])}; report built with "
        + ", ".join(f"{k} `{v}`" for k, v in inp.report_software.items())
        + ".",
        f"**Total compute of the study:** {sig(totals.device_hours)} {inp.unit.unit} "
        f"({seconds(totals.fit_seconds)} of fitting; by role: {role_hours}), "
        f"{si(totals.train_flops, 'FLOPs')} of training, over {totals.runs} trials including pruned and "
        "failed ones; runs from "
        f"{_when(totals.first_start_ms)} to {_when(totals.last_end_ms)}.",
    )
    blocks: list[Block] = [Heading("Methods"), Bullets(bullets)]
    if inp.parent_params:
        blocks.append(Paragraph("Sweep settings logged on the study's parent run:"))
        blocks.append(
            Table(
                ("Parameter", "Value"),
                tuple((f"`{k}`", redact_uri(str(v))) for k, v in sorted(inp.parent_params.items())),
            )
        )
    return blocks
