"""MLflow records -> one tidy row per trial: the table every other report module reads, and results.csv.

Columns keep MLflow's names (params by key, metrics like ``test/acc``), so a number in the table can be
traced to the run. Values are not rounded; numeric params are parsed only when every value parses, so
the CSV never disagrees with the logged string. Each run's ``outcome`` (completed, pruned, failed,
interrupted, running) and whether it collapsed are decided here, once; a study that crosses
``backbone`` or ``data.resolution`` with the strategies gets its arms labelled here too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from tlbench.strategies import UNTRAINED
from tlbench.tracking.names import (
    COLLAPSE_REASON,
    COLLAPSED,
    COLLAPSED_PREFIX,
    COMPLETED,
    FAILED_PREFIX,
    PRUNED,
    STATUS,
    VAL_ACC,
)
from tlbench.tracking.study_reader import RunRecord

# --- MLflow records -> the trials table ---------------------------------------------------------------------
# Columns keep MLflow's names (params by key, metrics like ``test/acc``), so a number in the table can be
# traced to the run. Values are not rounded; numeric params are parsed only when every value parses, so
# the CSV never disagrees with the logged string.

IDENTITY_COLUMNS = (
    "run_id", "run_name", "trial_number", "role", "status", "outcome", "collapsed", "collapse_reason",
    "mlflow_status", "cell", "tuned_from_trial", "pareto",
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
    "device", "device_count", "device_model", "device_hours_rule", "tlbench_version", "torch_version",
    "python_version", "optuna_study", "start_time_ms", "end_time_ms",
)  # fmt: skip
TAG_COLUMNS = (
    "role", "status", "trial_number", "cell", "tuned_from_trial", "pareto", "device", "device_count",
    "device_model", "device_hours_rule", "tlbench_version", "torch_version", "python_version",
    "optuna_study", "overrides", "race_round", "budget_factor", "base_run_id",
)  # fmt: skip
# Tags that duplicate a param: the param wins, the tag fills in when the param is absent.
_TAG_FALLBACK = ("strategy", "n_per_class")
INT_COLUMNS = (
    "trial_number", "tuned_from_trial", "freeze_depth", "seed", "resolution", "epochs", "freeze_groups",
    "lp_epochs", "batch_size", "split_seed", "n_train", "n_val", "n_test", "n_classes", "device_count",
)  # fmt: skip
FLOAT_COLUMNS = ("lr", "weight_decay", "backbone_lr_mult", "layer_decay")
OUTCOMES = ("completed", "pruned", "failed", "interrupted", "running")
INTERRUPTED = "failed: interrupted"  # what an interrupted fit's status tag says (training/fit.py)
CHANCE_SE = 2.0  # "within noise of chance": validation accuracy at most chance + 2 binomial standard errors


def outcome(status: str, mlflow_status: str) -> str:
    """completed | pruned | failed | interrupted | running, from the ``status`` tag and MLflow's status.

    Pruned trials are FINISHED with ``status=pruned`` (KILLED in older studies: the tag decides);
    KILLED without a result means interrupted (stopped, redone on resume), which is not a failure.
    """
    if status == COMPLETED:
        return "completed"
    if status == PRUNED:
        return "pruned"
    if mlflow_status == "KILLED" or status == INTERRUPTED:
        return "interrupted"
    if status.startswith(FAILED_PREFIX.rstrip(": ")):
        return "failed"
    if mlflow_status in {"RUNNING", "SCHEDULED"}:
        return "running"
    return "failed"  # the run ended without saying how: count it as a failure, never as a result


def chance_noise(n_classes: float, n_val: float) -> float | None:
    """The highest validation accuracy still within noise of chance (1/classes + 2 standard errors)."""
    if not (n_classes >= 2 and n_val >= 1):
        return None
    chance = 1.0 / n_classes
    return chance + CHANCE_SE * math.sqrt(chance * (1 - chance) / n_val)


def collapse(run: RunRecord) -> str | None:
    """Why the run is degenerate (collapse is a failure, never a finding), or None.

    The trial's own verdict (tag ``collapsed``, status ``failed: collapsed: ...``) first; for runs of
    older studies that carry none, a completed run whose validation accuracy is within noise of chance.
    """
    status = run.tags.get(STATUS, "")
    if run.tags.get(COLLAPSED) == "true" or status.startswith(COLLAPSED_PREFIX):
        reason = run.tags.get(COLLAPSE_REASON) or status.removeprefix(COLLAPSED_PREFIX)
        return reason or "collapsed (no reason recorded)"
    val = run.metrics.get(VAL_ACC)
    try:
        n_classes, n_val = float(run.params.get("n_classes", "")), float(run.params.get("n_val", ""))
    except ValueError:
        return None
    limit = chance_noise(n_classes, n_val)
    if status != COMPLETED or val is None or limit is None or val > limit:
        return None
    return (
        f"validation accuracy {100 * val:.1f}% is within noise of chance ({100 / n_classes:.1f}% for "
        f"{n_classes:.0f} classes, {n_val:.0f} validation images; found by the report)"
    )


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
    row["status"] = run.tags.get(STATUS, "")
    reason = collapse(run)
    row["collapsed"] = reason is not None
    row["collapse_reason"] = reason or ""
    row["outcome"] = "failed" if reason else outcome(str(row["status"]), run.mlflow_status)
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
    frame["collapsed"] = frame["collapsed"].map(lambda v: v is True).astype(bool)
    frame["collapse_reason"] = frame["collapse_reason"].astype("string").fillna("")
    known = [*IDENTITY_COLUMNS, *PARAM_COLUMNS, *METRIC_COLUMNS, *ENV_COLUMNS]
    extra_metrics = sorted(c for c in frame.columns if c not in known and "/" in c)
    extra_params = sorted(c for c in frame.columns if c not in known and "/" not in c)
    order = [*IDENTITY_COLUMNS, *PARAM_COLUMNS, *extra_params, *METRIC_COLUMNS, *extra_metrics, *ENV_COLUMNS]
    frame = frame[order]
    # trial numbers restart in every cell's Optuna study: start time is the one order over the study
    return frame.sort_values(["start_time_ms", "run_id"], na_position="last").reset_index(drop=True)


# --- arms: strategy x the factors a study varies ------------------------------------------------------------
# A study that crosses ``data.resolution`` or ``backbone`` with the strategies (the cheapest knobs users
# have) must not pool its runs per strategy: each combination is an arm of its own, labelled
# ``"<strategy>, <value>"`` (``linear_probe, 224px``), which every table, figure and the recommendation
# then treat as a strategy (figures keep the strategy's colour for its arms).

ARM_FACTORS = (("backbone", "{}"), ("resolution", "{}px"))  # column, how a value is labelled


def varying_factors(trials: pd.DataFrame) -> list[str]:
    """The arm factors that take more than one value among the trained final runs."""
    finals = trials[(trials["role"] == "final") & ~trials["strategy"].isin(UNTRAINED)]
    return [c for c, _ in ARM_FACTORS if c in finals and finals[c].dropna().astype(str).nunique() > 1]


def label_arms(trials: pd.DataFrame) -> pd.DataFrame:
    """``trials`` with ``strategy`` relabelled per arm when the study varies an arm factor; the plain
    strategy stays in ``strategy_name``. Unchanged (no copy) when nothing varies."""
    varying = varying_factors(trials)
    if not varying:
        return trials
    out = trials.copy()
    out["strategy_name"] = out["strategy"]
    formats = dict(ARM_FACTORS)
    for column in varying:
        suffix = out[column].map(lambda v, f=formats[column]: "" if pd.isna(v) else ", " + f.format(v))
        out["strategy"] = (out["strategy"].astype(str) + suffix.astype(str)).astype("string")
    return out
