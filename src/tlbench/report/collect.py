"""MLflow records -> one tidy row per trial (the table every other report module reads, and results.csv).

Columns keep MLflow's names (params by key, metrics like ``test/acc``), so a number in the table can be
traced to the run. Values are not rounded; numeric params are parsed only when every value parses, so
the CSV never disagrees with the logged string.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from tlbench.tracking.study_reader import RunRecord

IDENTITY_COLUMNS = (
    "run_id", "run_name", "trial_number", "role", "status", "outcome", "mlflow_status", "cell",
    "tuned_from_trial", "pareto",
)  # fmt: skip
PARAM_COLUMNS = (
    "strategy", "backbone", "weights", "freeze_depth", "n_per_class", "lr", "schedule", "seed", "dataset",
    "resolution", "epochs", "freeze_groups", "lp_epochs", "head", "optimizer", "weight_decay",
    "backbone_lr_mult", "layer_decay", "batch_size", "precision", "augment", "split_seed", "data_root",
    "n_train", "n_val", "n_test", "n_classes", "data_fingerprint",
)  # fmt: skip
METRIC_COLUMNS = (
    "val/acc", "val/loss", "test/acc", "test/loss", "train/loss", "cost/device_hours", "cost/fit_seconds",
    "cost/train_flops", "cost/eval_flops", "cost/standalone_device_hours", "cost/standalone_train_flops",
    "cost/train_samples", "cost/images_per_second",
    "cost/peak_memory_mb", "params/trainable", "params/total",
)  # fmt: skip
ENV_COLUMNS = (
    "device", "device_count", "device_model", "tlbench_version", "torch_version", "python_version",
    "optuna_study", "start_time_ms", "end_time_ms",
)  # fmt: skip
TAG_COLUMNS = (
    "role", "status", "trial_number", "cell", "tuned_from_trial", "pareto", "device", "device_count",
    "device_model", "tlbench_version", "torch_version", "python_version", "optuna_study", "overrides",
)  # fmt: skip
# Tags that duplicate a param: the param wins, the tag fills in when the param is absent.
_TAG_FALLBACK = ("strategy", "n_per_class")
INT_COLUMNS = (
    "trial_number", "tuned_from_trial", "freeze_depth", "seed", "resolution", "epochs", "freeze_groups",
    "lp_epochs", "batch_size", "split_seed", "n_train", "n_val", "n_test", "n_classes", "device_count",
)  # fmt: skip
FLOAT_COLUMNS = ("lr", "weight_decay", "backbone_lr_mult", "layer_decay")
OUTCOMES = ("completed", "pruned", "failed", "running")


def outcome(status: str, mlflow_status: str) -> str:
    """completed | pruned | failed | running, from the trial's ``status`` tag and MLflow's run status."""
    if status == "completed":
        return "completed"
    if status == "pruned":
        return "pruned"
    if status.startswith("failed"):
        return "failed"
    if mlflow_status in {"RUNNING", "SCHEDULED"}:
        return "running"
    return "failed"  # the run ended without saying how: count it as a failure, never as a result


def _row(run: RunRecord) -> dict[str, object]:
    row: dict[str, object] = {
        "run_id": run.run_id,
        "run_name": run.run_name,
        "mlflow_status": run.mlflow_status,
    }
    row.update({k: run.tags[k] for k in TAG_COLUMNS if k in run.tags})
    row.update({k: run.tags[k] for k in _TAG_FALLBACK if k in run.tags})
    row.update(run.params)
    row.update(run.metrics)
    row["status"] = run.tags.get("status", "")
    row["outcome"] = outcome(str(row["status"]), run.mlflow_status)
    row["start_time_ms"] = run.start_time_ms
    row["end_time_ms"] = run.end_time_ms
    return row


def _numeric(column: pd.Series, *, integer: bool) -> pd.Series:
    """Parsed values when every non-empty value parses, else the strings unchanged."""
    text = column.astype("string").str.strip().replace("", pd.NA)
    parsed = pd.to_numeric(text, errors="coerce")
    if bool((parsed.isna() & text.notna()).any()):
        return column
    if integer and bool((parsed.dropna() % 1 == 0).all()):
        return parsed.astype("Int64")
    return parsed.astype("float64")


def trials_table(runs: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per trial run, columns in a stable order (identity, params, metrics, environment)."""
    frame = pd.DataFrame([_row(r) for r in runs])  # no runs: no columns yet, all added below
    for name in (*IDENTITY_COLUMNS, *PARAM_COLUMNS, *ENV_COLUMNS):
        if name not in frame.columns:
            frame[name] = pd.NA
    for name in METRIC_COLUMNS:
        if name not in frame.columns:
            frame[name] = float("nan")
    for name in INT_COLUMNS:
        frame[name] = _numeric(frame[name], integer=True)
    for name in FLOAT_COLUMNS:
        frame[name] = _numeric(frame[name], integer=False)
    for name in ("start_time_ms", "end_time_ms"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("Int64")
    frame["n_per_class"] = frame["n_per_class"].astype("string").fillna("?")
    frame["strategy"] = frame["strategy"].astype("string").fillna("?")
    frame["role"] = frame["role"].astype("string").fillna("")
    known = [*IDENTITY_COLUMNS, *PARAM_COLUMNS, *METRIC_COLUMNS, *ENV_COLUMNS]
    extra_metrics = sorted(c for c in frame.columns if c not in known and "/" in c)
    extra_params = sorted(c for c in frame.columns if c not in known and "/" not in c)
    order = [*IDENTITY_COLUMNS, *PARAM_COLUMNS, *extra_params, *METRIC_COLUMNS, *extra_metrics, *ENV_COLUMNS]
    frame = frame[order]
    # trial numbers restart in every cell's Optuna study: start time is the one order over the study
    return frame.sort_values(["start_time_ms", "run_id"], na_position="last").reset_index(drop=True)
