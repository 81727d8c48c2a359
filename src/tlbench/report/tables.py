"""The trials table (one tidy row per MLflow run; results.csv) and the pure tables over it.

Columns keep MLflow's names so a number can be traced to its run; numeric params are parsed only when
every value parses, so the CSV never disagrees with the logged string. Each run's ``outcome`` and
collapse are decided here, once. Test accuracy is read only from completed ``role=final`` runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import yaml
from scipy.stats import kendalltau, spearmanr

from tlbench.report.render import sorted_sizes, sorted_strategies
from tlbench.report.stats import mean_ci
from tlbench.strategies import UNTRAINED
from tlbench.tracking import names as N
from tlbench.tracking.study import RunRecord

IDENTITY_COLUMNS = (
    "run_id", "run_name", N.TRIAL_NUMBER, N.ROLE, N.STATUS, "outcome", N.COLLAPSED, N.COLLAPSE_REASON,
    "mlflow_status", N.CELL, N.TUNED_FROM, "pareto",
)  # fmt: skip
PARAM_COLUMNS = (
    "strategy", "backbone", "weights", "freeze_depth", "n_per_class", "lr", "schedule", "seed", "dataset",
    "resolution", "epochs", "freeze_groups", "lp_epochs", "head", "optimizer", "weight_decay",
    "backbone_lr_mult", "layer_decay", "batch_size", "precision", "augment", "split_seed", "data_root",
    "n_train", "n_val", "n_test", "n_classes", "data_fingerprint",
)  # fmt: skip
METRIC_COLUMNS = (
    N.VAL_ACC, "val/loss", N.TEST_ACC, "test/loss", N.TRAIN_LOSS, N.DEVICE_HOURS, N.FIT_SECONDS,
    N.TRAIN_FLOPS, N.EVAL_FLOPS, "cost/standalone_device_hours", "cost/standalone_train_flops",
    "cost/train_samples", N.IMAGES_PER_SECOND,
    N.PEAK_MEMORY_MB, N.PARAMS_TRAINABLE, N.PARAMS_TOTAL,
)  # fmt: skip
ENV_COLUMNS = (
    N.DEVICE, N.DEVICE_COUNT, "device_model", N.DEVICE_HOURS_RULE, "tlbench_version", "torch_version",
    "python_version", N.OPTUNA_STUDY, "start_time_ms", "end_time_ms",
)  # fmt: skip
TAG_COLUMNS = (
    N.ROLE, N.STATUS, N.TRIAL_NUMBER, N.CELL, N.TUNED_FROM, "pareto", N.DEVICE, N.DEVICE_COUNT,
    "device_model", N.DEVICE_HOURS_RULE, "tlbench_version", "torch_version", "python_version",
    N.OPTUNA_STUDY, N.OVERRIDES, N.RACE_ROUND, N.BUDGET_FACTOR, N.BASE_RUN_ID,
)  # fmt: skip
# Tags that duplicate a param: the param wins, the tag fills in when the param is absent.
_TAG_FALLBACK = ("strategy", "n_per_class")
INT_COLUMNS = (
    N.TRIAL_NUMBER, N.TUNED_FROM, "freeze_depth", "seed", "resolution", "epochs", "freeze_groups",
    "lp_epochs", "batch_size", "split_seed", "n_train", "n_val", "n_test", "n_classes", N.DEVICE_COUNT,
)  # fmt: skip
FLOAT_COLUMNS = ("lr", "weight_decay", "backbone_lr_mult", "layer_decay")
OUTCOMES = ("completed", "pruned", "failed", "interrupted", "running")
INTERRUPTED = "failed: interrupted"  # what an interrupted fit's status tag says (training/fit.py)
CHANCE_SE = 2.0  # "within noise of chance": validation accuracy at most chance + 2 binomial standard errors


def outcome(status: str, mlflow_status: str) -> str:
    """From the ``status`` tag and MLflow's status; KILLED without a result is interrupted, not failed
    (older studies' pruned trials are KILLED too: the tag decides)."""
    if status == N.COMPLETED:
        return "completed"
    if status == N.PRUNED:
        return "pruned"
    if mlflow_status == "KILLED" or status == INTERRUPTED:
        return "interrupted"
    if status.startswith(N.FAILED_PREFIX.rstrip(": ")):
        return "failed"
    if mlflow_status in {"RUNNING", "SCHEDULED"}:
        return "running"
    return "failed"  # the run ended without saying how: count it as a failure, never as a result


def collapse(run: RunRecord) -> str | None:
    """Why the run is degenerate, or None: the trial's own verdict, else (older studies) a completed run
    whose validation accuracy is within noise of chance (1/classes + 2 standard errors)."""
    status = run.tags.get(N.STATUS, "")
    if run.tags.get(N.COLLAPSED) == "true" or status.startswith(N.COLLAPSED_PREFIX):
        reason = run.tags.get(N.COLLAPSE_REASON) or status.removeprefix(N.COLLAPSED_PREFIX)
        return reason or "collapsed (no reason recorded)"
    val = run.metrics.get(N.VAL_ACC)
    try:
        n_classes, n_val = float(run.params.get("n_classes", "")), float(run.params.get("n_val", ""))
    except ValueError:
        return None
    if status != N.COMPLETED or val is None or not (n_classes >= 2 and n_val >= 1):
        return None
    chance = 1.0 / n_classes
    if val > chance + CHANCE_SE * math.sqrt(chance * (1 - chance) / n_val):
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
    row[N.STATUS] = run.tags.get(N.STATUS, "")
    reason = collapse(run)
    row[N.COLLAPSED] = reason is not None
    row[N.COLLAPSE_REASON] = reason or ""
    row["outcome"] = "failed" if reason else outcome(str(row[N.STATUS]), run.mlflow_status)
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
    absent = {name: pd.NA for name in (*IDENTITY_COLUMNS, *PARAM_COLUMNS, *ENV_COLUMNS) if name not in frame}
    frame = frame.assign(**absent, **{name: math.nan for name in METRIC_COLUMNS if name not in frame})
    for name in INT_COLUMNS:
        frame[name] = _numeric(frame[name], integer=True)
    for name in FLOAT_COLUMNS:
        frame[name] = _numeric(frame[name], integer=False)
    for name in ("start_time_ms", "end_time_ms"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("Int64")
    frame["n_per_class"] = frame["n_per_class"].astype("string").fillna("?")
    frame["strategy"] = frame["strategy"].astype("string").fillna("?")
    frame[N.ROLE] = frame[N.ROLE].astype("string").fillna("")
    frame[N.COLLAPSED] = frame[N.COLLAPSED].map(lambda v: v is True).astype(bool)
    frame[N.COLLAPSE_REASON] = frame[N.COLLAPSE_REASON].astype("string").fillna("")
    known = [*IDENTITY_COLUMNS, *PARAM_COLUMNS, *METRIC_COLUMNS, *ENV_COLUMNS]
    extra_metrics = sorted(c for c in frame.columns if c not in known and "/" in c)
    extra_params = sorted(c for c in frame.columns if c not in known and "/" not in c)
    order = [*IDENTITY_COLUMNS, *PARAM_COLUMNS, *extra_params, *METRIC_COLUMNS, *extra_metrics, *ENV_COLUMNS]
    frame = frame[order]
    # trial numbers restart in every cell's Optuna study: start time is the one order over the study
    return frame.sort_values(["start_time_ms", "run_id"], na_position="last").reset_index(drop=True)


ARM_FACTORS = (("backbone", "{}"), ("resolution", "{}px"))  # column, how a value is labelled


def label_arms(trials: pd.DataFrame) -> pd.DataFrame:
    """A study that varies an arm factor among its trained finals gets one arm per combination:
    ``strategy`` becomes ``"linear_probe, 224px"`` (the plain name stays in ``strategy_name``)."""
    finals = trials[(trials[N.ROLE] == N.FINAL) & ~trials["strategy"].isin(UNTRAINED)]
    varying = [c for c, _ in ARM_FACTORS if c in finals and finals[c].dropna().astype(str).nunique() > 1]
    if not varying:
        return trials
    out = trials.copy()
    out["strategy_name"] = out["strategy"]
    formats = dict(ARM_FACTORS)
    for column in varying:
        suffix = out[column].map(lambda v, f=formats[column]: "" if pd.isna(v) else ", " + f.format(v))
        out["strategy"] = (out["strategy"].astype(str) + suffix.astype(str)).astype("string")
    return out


# The pure tables over the trials table.

SUMMARY_COLUMNS = (
    "n_per_class", "strategy", "seeds", "acc_mean", "acc_ci", "acc_std", "device_hours", "train_flops",
    "trainable_params", "best",
)  # fmt: skip


# A run's cost as if run alone: ``standalone`` adds back frozen features it reused from another trial
# (totals use the plain metric, which older runs have alone).
_RUN_COST = {
    "device_hours": ("cost/standalone_device_hours", N.DEVICE_HOURS),
    "train_flops": ("cost/standalone_train_flops", N.TRAIN_FLOPS),
}


def run_cost(frame: pd.DataFrame, kind: str) -> pd.Series:
    standalone, spent = _RUN_COST[kind]
    cost = frame[spent].astype(float)
    if standalone in frame.columns:
        cost = frame[standalone].astype(float).where(frame[standalone].notna(), cost)
    return cost


def final_results(trials: pd.DataFrame, role: str = N.FINAL, metric: str = N.TEST_ACC) -> pd.DataFrame:
    """Completed runs of ``role`` with ``metric``: by default the final runs the summary is made of."""
    return trials[(trials[N.ROLE] == role) & (trials["outcome"] == "completed") & trials[metric].notna()]


def tune_results(trials: pd.DataFrame) -> pd.DataFrame:
    return final_results(trials, N.TUNE, N.VAL_ACC)


def groups(frame: pd.DataFrame, column: str) -> list[tuple[str, pd.DataFrame]]:
    """The rows of ``frame`` per value of ``column`` (``n_per_class`` or ``strategy``), in report order."""
    order = sorted_sizes if column == "n_per_class" else sorted_strategies
    return [(value, frame[frame[column] == value]) for value in order(frame[column])]


def _order(frame: pd.DataFrame) -> pd.DataFrame:
    sizes = {s: i for i, s in enumerate(sorted_sizes(frame["n_per_class"]))}
    strategies = {s: i for i, s in enumerate(sorted_strategies(frame["strategy"]))}
    keys = frame["n_per_class"].map(sizes) * 1000 + frame["strategy"].map(strategies)
    return frame.assign(_k=keys).sort_values("_k").drop(columns="_k").reset_index(drop=True)


def summary_table(trials: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """Per strategy × size: mean test accuracy ± CI half-width (NaN: one seed), mean costs, and ``best``
    (the highest mean of its size; ties: all)."""
    rows = []
    for (size, strategy), group in final_results(trials).groupby(["n_per_class", "strategy"], sort=False):
        estimate = mean_ci(group[N.TEST_ACC].tolist(), confidence=confidence)
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
                "trainable_params": _mean(group[N.PARAMS_TRAINABLE]),
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
    counts = pd.crosstab(trials[N.ROLE].replace("", "(no role)"), trials["outcome"])
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
            final = cell[cell[N.ROLE] == N.FINAL]
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
                    tune_runs=int((cell[N.ROLE] == N.TUNE).sum()),
                )
            )
    return gaps


def failures(trials: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """(role, strategy, size, status text) of failed trials that did not collapse."""
    failed = trials[(trials["outcome"] == "failed") & ~trials[N.COLLAPSED]]
    return [
        (str(r[N.ROLE]), str(r["strategy"]), str(r["n_per_class"]), str(r[N.STATUS]) or "no status recorded")
        for _, r in failed.iterrows()
    ]


@dataclass(frozen=True)
class FailedConfiguration:
    """An arm at one data size whose runs collapsed (at chance, or loss ending above its start)."""

    strategy: str
    n_per_class: str
    runs: dict[str, int]  # role -> collapsed runs
    reasons: tuple[str, ...]  # distinct reasons, as the runs logged them
    finals_left: int  # completed final runs of the arm that did not collapse

    @property
    def arm_failed(self) -> bool:
        """Every final run collapsed: the arm has no result, only a failure."""
        return self.runs.get(N.FINAL, 0) > 0 and self.finals_left == 0


def failed_configurations(trials: pd.DataFrame) -> list[FailedConfiguration]:
    """Collapsed runs per arm and size (excluded from every summary, comparison and recommendation)."""
    out = []
    for size, at_size in groups(trials[trials[N.COLLAPSED]], "n_per_class"):
        for strategy, runs in groups(at_size, "strategy"):
            cell = trials[(trials["n_per_class"] == size) & (trials["strategy"] == strategy)]
            out.append(
                FailedConfiguration(
                    strategy=strategy,
                    n_per_class=size,
                    runs={str(k): int(v) for k, v in runs[N.ROLE].value_counts().sort_index().items()},
                    reasons=tuple(dict.fromkeys(str(r) for r in runs[N.COLLAPSE_REASON])),
                    finals_left=len(final_results(cell)),
                )
            )
    return out


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
        str(role): math.fsum(group[N.DEVICE_HOURS].dropna())
        for role, group in trials.groupby(N.ROLE, sort=True)
    }
    starts = trials["start_time_ms"].dropna()
    ends = trials["end_time_ms"].dropna()
    return Totals(
        runs=len(trials),
        device_hours=math.fsum(trials[N.DEVICE_HOURS].dropna()),
        device_hours_by_role=by_role,
        fit_seconds=math.fsum(trials[N.FIT_SECONDS].dropna()),
        train_flops=math.fsum(trials[N.TRAIN_FLOPS].dropna()),
        first_start_ms=int(starts.min()) if len(starts) else None,
        last_end_ms=int(ends.max()) if len(ends) else None,
    )


def best_tuning_val(trials: pd.DataFrame) -> pd.DataFrame:
    """Per strategy × size, the best validation accuracy among completed tuning trials."""
    tune = tune_results(trials)
    if tune.empty:
        return pd.DataFrame(columns=["n_per_class", "strategy", "val_acc", "trials"])
    grouped = tune.groupby(["n_per_class", "strategy"], sort=False)[N.VAL_ACC]
    table = pd.DataFrame({"val_acc": grouped.max(), "trials": grouped.size()}).reset_index()
    return _order(table)


# --- the protocol as the runs and the sweep definition record it (Methods) -----------------------------


def _sweep(sweep_yaml: str | None) -> dict[str, Any] | None:
    if not sweep_yaml:
        return None
    try:
        value = yaml.safe_load(sweep_yaml)
    except yaml.YAMLError:
        return None
    return value if isinstance(value, dict) else None


def _cell_values(cell: str) -> dict[str, str]:
    """``data.n_per_class=10,strategy=lp_ft`` -> ``{"data.n_per_class": "10", "strategy": "lp_ft"}``."""
    return dict(part.partition("=")[::2] for part in cell.split(",") if "=" in part)


def _same(a: str, b: str) -> bool:
    try:
        return a == b or float(a) == float(b)
    except ValueError:
        return False


def _matches(condition: str, values: dict[str, str]) -> bool:
    wanted = _cell_values(str(condition).replace(" ", ""))
    return bool(wanted) and all(k in values and _same(values[k], v) for k, v in wanted.items())


def _describe(spec: object) -> str:
    if isinstance(spec, dict) and "choices" in spec:
        return "one of " + ", ".join(str(c) for c in spec["choices"] or ())
    if isinstance(spec, dict) and "low" in spec and "high" in spec:
        text = f"{float(spec['low']):g}–{float(spec['high']):g}"
        extras = [w for w in ("log",) if spec.get(w)] + (
            [f"step {spec['step']:g}"] if spec.get("step") else []
        )
        return text + (f" ({', '.join(extras)})" if extras else "")
    return str(spec)


def searched_ranges(sweep_yaml: str | None, cell: str) -> tuple[str, ...] | None:
    """The search space of ``cell`` from the study's sweep definition (``search`` then the matching
    ``search_where`` entries, later ones winning, as the sweep builds it); None when there is none to read."""
    sweep = _sweep(sweep_yaml)
    if sweep is None:
        return None
    params = dict(sweep.get("search") or {})
    values = _cell_values(cell)
    for condition, extra in (sweep.get("search_where") or {}).items():
        if isinstance(extra, dict) and _matches(str(condition), values):
            params.update(extra)
    return tuple(f"`{path}` {_describe(spec)}" for path, spec in params.items())


def sweep_budget(sweep_yaml: str | None, key: str) -> object:
    """``budget.<key>`` of the sweep definition (``trials_per_cell``, ``tune_at``); None when unsaid."""
    budget = (_sweep(sweep_yaml) or {}).get("budget")
    return budget.get(key) if isinstance(budget, dict) else None


@dataclass(frozen=True)
class TuningRow:
    """How one arm at one size was tuned."""

    n_per_class: str
    strategy: str
    counts: dict[str, int]  # outcome -> tuning trials
    searched: tuple[str, ...] | None  # None: the sweep definition is not available

    @property
    def trials(self) -> int:
        return sum(self.counts.values())


def tuning_protocol(trials: pd.DataFrame, sweep_yaml: str | None) -> list[TuningRow]:
    """Per arm and size with tuning or final runs: its tuning trials by outcome and its searched ranges."""
    rows = []
    for size, at_size in groups(trials[trials[N.ROLE].isin([N.TUNE, N.FINAL])], "n_per_class"):
        for strategy, runs in groups(at_size, "strategy"):
            tune = runs[runs[N.ROLE] == N.TUNE]
            cells = [str(c) for c in runs[N.CELL].dropna() if str(c)]
            counts = {str(k): int(v) for k, v in tune["outcome"].value_counts().items()}
            searched = searched_ranges(sweep_yaml, cells[0]) if cells else None
            rows.append(TuningRow(size, strategy, counts, searched))
    return rows


@dataclass(frozen=True)
class BudgetCheck:
    """A tuned configuration re-run with a larger step budget: did it change validation accuracy?"""

    strategy: str
    n_per_class: str
    factor: str  # the budget multiplier ("2")
    base_val: float | None  # the checked run's validation accuracy
    val: float | None  # with the larger budget; None when the check did not complete
    outcome: str
    reason: str = ""

    @property
    def change(self) -> float | None:
        return None if self.val is None or self.base_val is None else self.val - self.base_val


def budget_checks(trials: pd.DataFrame) -> list[BudgetCheck]:
    """Every budget-check run (role ``budget_check``), in report order."""
    runs = trials[trials[N.ROLE] == N.BUDGET_CHECK]
    val_by_run = dict(zip(trials["run_id"].astype(str), trials[N.VAL_ACC], strict=True))
    out = []
    for _, row in runs.iterrows():
        base = row.get(N.BASE_VAL_ACC, math.nan)
        if pd.isna(base):  # fall back to the checked run itself
            base = val_by_run.get(str(row.get(N.BASE_RUN_ID, "")), math.nan)
        done = row["outcome"] == "completed" and not pd.isna(row[N.VAL_ACC])
        reason = str(row[N.COLLAPSE_REASON]) if row[N.COLLAPSED] else str(row[N.STATUS])
        out.append(
            BudgetCheck(
                strategy=str(row["strategy"]),
                n_per_class=str(row["n_per_class"]),
                factor=str(row.get(N.BUDGET_FACTOR, "") or "?"),
                base_val=None if pd.isna(base) else float(base),
                val=float(row[N.VAL_ACC]) if done else None,
                outcome=str(row["outcome"]),
                reason="" if done else reason,
            )
        )
    order = {s: i for i, s in enumerate(sorted_strategies(c.strategy for c in out))}
    sizes = {s: i for i, s in enumerate(sorted_sizes(c.n_per_class for c in out))}
    return sorted(out, key=lambda c: (sizes[c.n_per_class], order[c.strategy]))


@dataclass(frozen=True)
class RaceArm:
    cell: str
    strategy: str
    n_per_class: str
    factors: dict[str, str]
    seeds: tuple[int, ...]
    retired_round: int | None  # None: it ran to the end
    reason: str

    @property
    def label(self) -> str:
        """The arm as the report names it: the strategy, then factor values other than strategy and size."""
        others = [v for k, v in self.factors.items() if k.split(".")[-1] not in {"strategy", "n_per_class"}]
        return ", ".join([self.strategy, *others])


@dataclass(frozen=True)
class Race:
    """The racing finals as the sweep recorded them (``race.json`` on the parent run)."""

    rule: str
    cap: int | None
    rounds: int | None
    arms: tuple[RaceArm, ...]


def parse_race(text: str | None) -> Race | None:
    """``race.json`` (CONTRACTS.md schema); None when the study did not race; ValueError when not that
    schema (the report says so rather than guessing)."""
    if not text:
        return None
    try:
        data = json.loads(text)
        arms = tuple(
            RaceArm(
                cell=str(a.get(N.CELL, "")),
                strategy=str(a["strategy"]),
                n_per_class=str(a["n_per_class"]),
                factors={str(k): str(v) for k, v in (a.get("factors") or {}).items()},
                seeds=tuple(int(s) for s in a.get("seeds") or ()),
                retired_round=None if a.get("retired_round") is None else int(a["retired_round"]),
                reason=str(a.get("reason", "")),
            )
            for a in data["arms"]
        )
        cap, rounds = data.get("cap"), data.get("rounds")
        return Race(
            rule=str(data.get("rule", "")),
            cap=None if cap is None else int(cap),
            rounds=None if rounds is None else int(rounds),
            arms=arms,
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(
            f"race.json is not the racing record tlbench writes ({type(exc).__name__}: {exc})"
        ) from None


# --- the screen against training ----------------------------------------------------------------------------
# Each screen score's Kendall tau-b and Spearman rho with mean final test accuracy: within each strategy,
# at each backbone's best strategy, and over all cells pooled (scores repeat there: tau-b handles ties).

# metric -> label, in the order the report shows them
SCREEN_SCORES = {
    "screen/logme": "LogME",
    "screen/knn_loo_acc": "kNN (leave-one-out, train)",
    "screen/knn_acc": "kNN (validation)",
    "screen/probe_cv_acc": "probe (cross-validated)",
    "screen/as_is_acc": "as_is (validation)",
}
SCREEN_COSTS = ("cost/forward_flops", "cost/screen_seconds", N.DEVICE_HOURS)
SCREEN_COLUMNS = (
    "backbone",
    "run_id",
    "weights",
    "resolution",
    "n_per_class",
    "n_train",
    "kept",
    N.SCREEN_REASON,
)
BEST_SCOPE, POOLED_SCOPE = "best strategy per backbone", "all cells pooled"


def is_screen_run(run: RunRecord) -> bool:
    return run.tags.get(N.ROLE) == N.SCREEN


def screen_table(runs: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per screened backbone (its latest completed screen run), scores and costs as columns."""
    rows = []
    for run in sorted(runs, key=lambda r: (r.start_time_ms or 0, r.run_id)):
        if not is_screen_run(run) or run.mlflow_status != "FINISHED":
            continue
        row: dict[str, object] = {"backbone": run.params.get("backbone", "?"), "run_id": run.run_id}
        row.update({k: run.params.get(k, "") for k in SCREEN_COLUMNS[2:6]})
        kept = run.tags.get(
            N.SCREEN_KEPT
        )  # a study's screen phase: trained or dropped (absent: a plain screen)
        row["kept"] = None if kept is None else kept == "true"
        row[N.SCREEN_REASON] = run.tags.get(N.SCREEN_REASON, "")
        row.update({k: run.metrics.get(k, math.nan) for k in (*SCREEN_SCORES, *SCREEN_COSTS)})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=[*SCREEN_COLUMNS, *SCREEN_SCORES, *SCREEN_COSTS])
    return frame.drop_duplicates("backbone", keep="last").sort_values("backbone").reset_index(drop=True)


def trained_accuracy(trials: pd.DataFrame) -> pd.DataFrame:
    """Mean final test accuracy per (backbone, strategy): columns backbone, strategy, test_acc, seeds."""
    final = final_results(trials)[["backbone", "strategy", N.TEST_ACC]].astype({"backbone": "string"})
    grouped = final.groupby(["backbone", "strategy"], sort=True)[N.TEST_ACC]
    out = pd.DataFrame({"test_acc": grouped.mean(), "seeds": grouped.size()}).reset_index()
    return out.astype({"backbone": str, "strategy": str})


@dataclass(frozen=True)
class Agreement:
    """Rank agreement of one screen score with trained accuracy within one scope."""

    score: str  # metric name, e.g. screen/logme
    scope: str  # a strategy, BEST_SCOPE or POOLED_SCOPE
    n: int  # points compared
    kendall_tau: float  # tau-b; NaN when fewer than 2 points or a side is constant
    spearman_rho: float


def _pairs(screen: pd.DataFrame, trained: pd.DataFrame, score: str) -> pd.DataFrame:
    merged = trained.merge(screen[["backbone", score]], on="backbone", how="inner")
    return merged[merged[score].notna()]


def scopes(trained: pd.DataFrame) -> list[str]:
    strategies = sorted(trained["strategy"].unique()) if len(trained) else []
    return [*strategies, BEST_SCOPE, POOLED_SCOPE]


def best_per_backbone(trained: pd.DataFrame) -> pd.DataFrame:
    """Each backbone's best strategy by mean final test accuracy (ties: first strategy by name)."""
    ordered = trained.sort_values(["backbone", "test_acc", "strategy"], ascending=[True, False, True])
    return ordered.drop_duplicates("backbone").reset_index(drop=True)


def agreements(screen: pd.DataFrame, trained: pd.DataFrame) -> list[Agreement]:
    """Every (score, scope) with at least one matched point; scores the screen never logged are left out."""
    out = []
    for score in SCREEN_SCORES:
        if score not in screen or screen[score].isna().all():
            continue
        pairs = _pairs(screen, trained, score)
        for scope in scopes(trained):
            if scope == POOLED_SCOPE:
                part = pairs
            elif scope == BEST_SCOPE:
                part = _pairs(screen, best_per_backbone(trained), score)
            else:
                part = pairs[pairs["strategy"] == scope]
            if part.empty:
                continue
            x, y = list(part[score]), list(part["test_acc"])
            if len(set(x)) < 2 or len(set(y)) < 2:  # scipy warns and returns NaN
                out.append(Agreement(score, scope, len(part), math.nan, math.nan))
            else:
                tau, rho = kendalltau(x, y, variant="b").statistic, spearmanr(x, y).statistic
                out.append(Agreement(score, scope, len(part), float(tau), float(rho)))
    return out


@dataclass(frozen=True)
class Pick:
    """Which backbone a screen score would have chosen, against the one training found best."""

    score: str
    screen_pick: str
    trained_best: str  # best backbone by its best strategy's mean final test accuracy
    trained_best_acc: float
    pick_acc: float  # the screen's pick, at its best strategy
    same: bool
    tied: tuple[str, ...] = ()  # backbones sharing the top score: the screen cannot choose among them

    @property
    def regret(self) -> float:
        """Test accuracy given up by trusting the screen (0 when it picked the best)."""
        return self.trained_best_acc - self.pick_acc


def picks(screen: pd.DataFrame, trained: pd.DataFrame) -> list[Pick]:
    """Per score: the screen's top backbone among those training also ran, and training's best."""
    best = best_per_backbone(trained)
    if best.empty:
        return []
    by_backbone = best.set_index("backbone")["test_acc"]
    top = best.sort_values(["test_acc", "backbone"], ascending=[False, True]).iloc[0]
    out = []
    for score in SCREEN_SCORES:
        if score not in screen:
            continue
        candidates = screen[screen["backbone"].isin(by_backbone.index) & screen[score].notna()]
        if candidates.empty:
            continue
        chosen = candidates.sort_values([score, "backbone"], ascending=[False, True]).iloc[0]
        name = str(chosen["backbone"])
        top_value = float(chosen[score])
        tied = tuple(sorted(str(b) for b in candidates.loc[candidates[score] == top_value, "backbone"]))
        out.append(
            Pick(
                score=score,
                screen_pick=name,
                trained_best=str(top["backbone"]),
                trained_best_acc=float(top["test_acc"]),
                pick_acc=float(by_backbone[name]),
                same=name == str(top["backbone"]) and len(tied) == 1,
                tied=tied if len(tied) > 1 else (),
            )
        )
    return out


def ranking_table(screen: pd.DataFrame, trained: pd.DataFrame) -> pd.DataFrame:
    """Per screened backbone: kept or dropped, its rank by each screen score, its trained rank and accuracy
    (the best strategy's mean final test accuracy). Rows: trained backbones by trained rank, then the rest."""
    best = best_per_backbone(trained).set_index("backbone")
    out = screen[["backbone", "kept", N.SCREEN_REASON]].copy()
    for score in SCREEN_SCORES:
        if score in screen and not screen[score].isna().all():
            out[f"rank:{score}"] = screen[score].rank(ascending=False, method="min").to_numpy()
    out["trained_acc"] = out["backbone"].map(best["test_acc"]) if len(best) else math.nan
    out["trained_strategy"] = out["backbone"].map(best["strategy"]) if len(best) else None
    out["trained_rank"] = out["trained_acc"].astype(float).rank(ascending=False, method="min")
    order = out["trained_rank"].fillna(math.inf)
    return out.assign(_o=order).sort_values(["_o", "backbone"]).drop(columns="_o").reset_index(drop=True)
