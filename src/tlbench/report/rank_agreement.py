"""How well the zero-training screen predicted what training found (pure tables, no drawing).

Inputs are the study's ``role=screen`` runs (one per backbone; the latest when a backbone was screened
twice) and its trials table. Training's answer per (backbone, strategy) is the mean test accuracy of
the completed ``role=final`` runs. For each screen score, Kendall's tau-b and Spearman's rho are
computed across backbones within each strategy, across backbones for each backbone's best strategy,
and over all (backbone, strategy) cells pooled (the screen score repeats across a backbone's
strategies there, so tau-b's tie correction matters).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from tlbench.tracking.names import SCREEN_KEPT, SCREEN_REASON
from tlbench.tracking.study_reader import RunRecord

SCREEN_ROLE = "screen"
# metric -> label, in the order the report shows them
SCREEN_SCORES = {
    "screen/logme": "LogME",
    "screen/knn_loo_acc": "kNN (leave-one-out, train)",
    "screen/knn_acc": "kNN (validation)",
    "screen/probe_cv_acc": "probe (cross-validated)",
    "screen/as_is_acc": "as_is (validation)",
}
SCREEN_COSTS = ("cost/forward_flops", "cost/screen_seconds", "cost/device_hours")
BEST_SCOPE, POOLED_SCOPE = "best strategy per backbone", "all cells pooled"


def is_screen_run(run: RunRecord) -> bool:
    return run.tags.get("role") == SCREEN_ROLE


def screen_table(runs: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per screened backbone (its latest completed screen run), scores and costs as columns."""
    rows = []
    for run in sorted(runs, key=lambda r: (r.start_time_ms or 0, r.run_id)):
        if not is_screen_run(run) or run.mlflow_status != "FINISHED":
            continue
        row: dict[str, object] = {"backbone": run.params.get("backbone", "?"), "run_id": run.run_id}
        row.update({k: run.params.get(k, "") for k in ("weights", "resolution", "n_per_class", "n_train")})
        kept = run.tags.get(
            SCREEN_KEPT
        )  # a study's screen phase: trained or dropped (absent: a plain screen)
        row["kept"] = None if kept is None else kept == "true"
        row["screen_reason"] = run.tags.get(SCREEN_REASON, "")
        row.update({k: run.metrics.get(k, math.nan) for k in (*SCREEN_SCORES, *SCREEN_COSTS)})
        rows.append(row)
    columns = [
        "backbone",
        "run_id",
        "weights",
        "resolution",
        "n_per_class",
        "n_train",
        "kept",
        "screen_reason",
        *SCREEN_SCORES,
        *SCREEN_COSTS,
    ]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.drop_duplicates("backbone", keep="last").sort_values("backbone").reset_index(drop=True)


def trained_accuracy(trials: pd.DataFrame) -> pd.DataFrame:
    """Mean final test accuracy per (backbone, strategy): columns backbone, strategy, test_acc, seeds."""
    mask = (trials["role"] == "final") & (trials["outcome"] == "completed") & trials["test/acc"].notna()
    final = trials.loc[mask, ["backbone", "strategy", "test/acc"]].astype({"backbone": "string"})
    grouped = final.groupby(["backbone", "strategy"], sort=True)["test/acc"]
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


def _rank_stats(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    from scipy.stats import kendalltau, spearmanr

    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan, math.nan
    tau = float(kendalltau(x, y, variant="b").statistic)
    rho = float(spearmanr(x, y).statistic)
    return tau, rho


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
            tau, rho = _rank_stats(list(part[score]), list(part["test_acc"]))
            out.append(Agreement(score, scope, len(part), tau, rho))
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


def ranks(values: pd.Series) -> pd.Series:
    """1 = best (highest); ties share the better rank; NaN stays NaN."""
    return values.rank(ascending=False, method="min")


def ranking_table(screen: pd.DataFrame, trained: pd.DataFrame) -> pd.DataFrame:
    """Per screened backbone: kept or dropped, its rank by each screen score, its trained rank and accuracy
    (the best strategy's mean final test accuracy). Rows: trained backbones by trained rank, then the rest."""
    best = best_per_backbone(trained).set_index("backbone")
    out = screen[["backbone", "kept", "screen_reason"]].copy()
    for score in SCREEN_SCORES:
        if score in screen and not screen[score].isna().all():
            out[f"rank:{score}"] = ranks(screen[score]).to_numpy()
    out["trained_acc"] = out["backbone"].map(best["test_acc"]) if len(best) else math.nan
    out["trained_strategy"] = out["backbone"].map(best["strategy"]) if len(best) else None
    out["trained_rank"] = ranks(out["trained_acc"].astype(float))
    order = out["trained_rank"].fillna(math.inf)
    return out.assign(_o=order).sort_values(["_o", "backbone"]).drop(columns="_o").reset_index(drop=True)
