"""Pure tables over the trials table: the summary (final runs only), outcome counts, gaps, totals.

Protocol: test accuracy is read only from ``role=final`` runs whose status is ``completed``; tuning
runs chose the configuration on validation accuracy and never contribute a test number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from tlbench.report.collect import OUTCOMES
from tlbench.report.formatting import sorted_sizes, sorted_strategies
from tlbench.report.stats import mean_ci

FINAL, TUNE = "final", "tune"
SUMMARY_COLUMNS = (
    "n_per_class", "strategy", "seeds", "acc_mean", "acc_ci", "acc_std", "device_hours", "train_flops",
    "trainable_params", "best",
)  # fmt: skip


# Cost of one run as a user running it alone would pay it: the ``standalone`` metric adds back
# frozen-prefix features this run reused from an earlier trial of the sweep; studies spend the
# plain metric (totals use it). Older runs without the standalone metric fall back to it.
_RUN_COST = {
    "device_hours": ("cost/standalone_device_hours", "cost/device_hours"),
    "train_flops": ("cost/standalone_train_flops", "cost/train_flops"),
}


def run_cost(frame: pd.DataFrame, kind: str) -> pd.Series:
    """Per-run cost (``device_hours`` or ``train_flops``) as if the run had been done on its own."""
    standalone, spent = _RUN_COST[kind]
    cost = frame[spent].astype(float)
    if standalone in frame.columns:
        cost = frame[standalone].astype(float).where(frame[standalone].notna(), cost)
    return cost


def final_results(trials: pd.DataFrame) -> pd.DataFrame:
    """The runs the summary is made of: final role, completed, with a test accuracy."""
    mask = (trials["role"] == FINAL) & (trials["outcome"] == "completed") & trials["test/acc"].notna()
    return trials[mask]


def tune_results(trials: pd.DataFrame) -> pd.DataFrame:
    """Completed tuning trials with a validation accuracy (LR sensitivity, trade-off by trial)."""
    mask = (trials["role"] == TUNE) & (trials["outcome"] == "completed") & trials["val/acc"].notna()
    return trials[mask]


def _order(frame: pd.DataFrame) -> pd.DataFrame:
    sizes = {s: i for i, s in enumerate(sorted_sizes(frame["n_per_class"]))}
    strategies = {s: i for i, s in enumerate(sorted_strategies(frame["strategy"]))}
    keys = frame["n_per_class"].map(sizes) * 1000 + frame["strategy"].map(strategies)
    return frame.assign(_k=keys).sort_values("_k").drop(columns="_k").reset_index(drop=True)


def summary_table(trials: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """strategy × data size -> mean test accuracy ± CI half-width over final seeds, mean costs, best flag.

    ``acc_ci`` is NaN for a single seed. ``best`` marks the highest mean accuracy per size (ties: all).
    """
    rows = []
    for (size, strategy), group in final_results(trials).groupby(["n_per_class", "strategy"], sort=False):
        estimate = mean_ci(group["test/acc"].tolist(), confidence=confidence)
        rows.append(
            {
                "n_per_class": str(size),
                "strategy": str(strategy),
                "seeds": estimate.n,
                "acc_mean": estimate.mean,
                "acc_ci": math.nan if estimate.half_width is None else estimate.half_width,
                "acc_std": math.nan if estimate.std is None else estimate.std,
                "device_hours": _mean(run_cost(group, "device_hours")),
                "train_flops": _mean(run_cost(group, "train_flops")),
                "trainable_params": _mean(group["params/trainable"]),
            }
        )
    table = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS[:-1]))
    if table.empty:
        return table.assign(best=pd.Series(dtype=bool))
    table = _order(table)
    table["best"] = table["acc_mean"] == table.groupby("n_per_class")["acc_mean"].transform("max")
    return table


def _mean(values: pd.Series) -> float:
    clean = [float(v) for v in values if not pd.isna(v)]
    return math.fsum(clean) / len(clean) if clean else math.nan


def outcome_counts(trials: pd.DataFrame) -> pd.DataFrame:
    """Rows: role; columns: completed, pruned, failed, running, total."""
    counts = pd.crosstab(trials["role"].replace("", "(no role)"), trials["outcome"])
    counts = counts.reindex(columns=list(OUTCOMES), fill_value=0)
    counts["total"] = counts.sum(axis=1)
    return counts.astype(int)


@dataclass(frozen=True)
class CellStatus:
    """A strategy × size cell that cannot be reported as the protocol asks (no or only one final seed)."""

    strategy: str
    n_per_class: str
    final_completed: int
    final_other: dict[str, int] = field(default_factory=dict)  # outcome -> count, final runs not completed
    tune_runs: int = 0


def cell_gaps(trials: pd.DataFrame) -> list[CellStatus]:
    """Cells of the (strategies seen × sizes seen) grid with fewer than two completed final seeds."""
    if trials.empty:
        return []
    gaps = []
    for size in sorted_sizes(trials["n_per_class"]):
        for strategy in sorted_strategies(trials["strategy"]):
            cell = trials[(trials["n_per_class"] == size) & (trials["strategy"] == strategy)]
            final = cell[cell["role"] == FINAL]
            done = len(final_results(cell))
            if done >= 2:
                continue
            other = final[final["outcome"] != "completed"]["outcome"].value_counts()
            gaps.append(
                CellStatus(
                    strategy=strategy,
                    n_per_class=size,
                    final_completed=done,
                    final_other={str(k): int(v) for k, v in other.items()},
                    tune_runs=int((cell["role"] == TUNE).sum()),
                )
            )
    return gaps


def failures(trials: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """(role, strategy, size, status text) of failed trials, so the report can say why."""
    failed = trials[trials["outcome"] == "failed"]
    return [
        (str(r["role"]), str(r["strategy"]), str(r["n_per_class"]), str(r["status"]) or "no status recorded")
        for _, r in failed.iterrows()
    ]


@dataclass(frozen=True)
class Totals:
    """Compute spent by the whole study, pruned and failed trials included (they cost real time)."""

    runs: int
    device_hours: float
    device_hours_by_role: dict[str, float]
    fit_seconds: float
    train_flops: float
    first_start_ms: int | None
    last_end_ms: int | None


def study_totals(trials: pd.DataFrame) -> Totals:
    by_role = {
        str(role): math.fsum(group["cost/device_hours"].dropna())
        for role, group in trials.groupby("role", sort=True)
    }
    starts = trials["start_time_ms"].dropna()
    ends = trials["end_time_ms"].dropna()
    return Totals(
        runs=len(trials),
        device_hours=math.fsum(trials["cost/device_hours"].dropna()),
        device_hours_by_role=by_role,
        fit_seconds=math.fsum(trials["cost/fit_seconds"].dropna()),
        train_flops=math.fsum(trials["cost/train_flops"].dropna()),
        first_start_ms=int(starts.min()) if len(starts) else None,
        last_end_ms=int(ends.max()) if len(ends) else None,
    )


def best_tuning_val(trials: pd.DataFrame) -> pd.DataFrame:
    """Per strategy × size, the best validation accuracy among completed tuning trials."""
    tune = tune_results(trials)
    if tune.empty:
        return pd.DataFrame(columns=["n_per_class", "strategy", "val_acc", "trials"])
    grouped = tune.groupby(["n_per_class", "strategy"], sort=False)["val/acc"]
    table = pd.DataFrame({"val_acc": grouped.max(), "trials": grouped.size()}).reset_index()
    return _order(table)
