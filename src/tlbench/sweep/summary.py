"""The end-of-sweep table: per cell, the tuning budget used, the chosen configuration, final test accuracy."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from optuna.trial import FrozenTrial

from tlbench.sweep import protocol as P


@dataclass(frozen=True)
class CellResult:
    cell: str
    counted: int  # tuning trials that count toward the budget
    budget: int  # the cell's tuning budget (0: not tuned, e.g. as_is)
    collapsed: int  # tuning and final trials at chance: failed configurations, never selected
    best_trial: int | None
    best_val: float | None
    best_params: dict[str, object]
    final_test: tuple[float, ...]  # test/acc of the final runs that did not collapse (the reported numbers)
    tuned_in: str | None = None  # budget.tune_at: the cell whose tuning chose this configuration

    @property
    def test_mean(self) -> float | None:
        return statistics.fmean(self.final_test) if self.final_test else None

    @property
    def test_std(self) -> float | None:
        return statistics.stdev(self.final_test) if len(self.final_test) > 1 else None


def cell_results(
    tune_trials: Mapping[str, Sequence[FrozenTrial]],
    final_trials: Sequence[FrozenTrial],
    *,
    budgets: Mapping[str, int],
    sources: Mapping[str, str] | None = None,
) -> list[CellResult]:
    """``tune_trials``: cell key -> the trials of its study; ``budgets``: cell key -> its tuning budget;
    ``sources``: cell key -> the cell whose tuning chose its configuration (``budget.tune_at``)."""
    results = []
    for cell, trials in tune_trials.items():
        source = (sources or {}).get(cell, cell)
        best = P.best_trial(tune_trials.get(source, trials))
        finals = [
            float(t.user_attrs["test_acc"])
            for t in final_trials
            if t.user_attrs.get(P.CELL) == cell
            and P.is_counted(t)
            and P.fail_kind(t) != P.COLLAPSED  # a failure, counted below, never a number (as in the report)
            and "test_acc" in t.user_attrs
        ]
        results.append(
            CellResult(
                cell=cell,
                counted=sum(1 for t in trials if P.is_counted(t)),
                budget=budgets[cell],
                collapsed=sum(
                    1
                    for t in [*trials, *(f for f in final_trials if f.user_attrs.get(P.CELL) == cell)]
                    if P.fail_kind(t) == P.COLLAPSED
                ),
                best_trial=best.number if best else None,
                best_val=float(best.value) if best and best.value is not None else None,
                best_params=dict(best.params) if best else {},
                final_test=tuple(finals),
                tuned_in=source if source != cell else None,
            )
        )
    return results


def _fmt(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def format_results(results: Sequence[CellResult]) -> str:
    width = max((len(r.cell) for r in results), default=4)
    lines = [f"{'cell':<{width}}  tuned  best val/acc  final test/acc (mean ± sd, n)  chosen"]
    for r in results:
        val = f"{r.best_val:.4f} (#{r.best_trial})" if r.best_val is not None else "—"
        test = "—"
        if r.test_mean is not None:
            sd = f" ± {r.test_std:.4f}" if r.test_std is not None else ""
            test = f"{r.test_mean:.4f}{sd}, n={len(r.final_test)}"
        chosen = ", ".join(f"{k}={_fmt(v)}" for k, v in r.best_params.items())
        if r.tuned_in:
            chosen += f"  (tuned at {r.tuned_in})"
        if r.collapsed:
            chosen += f"  ({r.collapsed} collapsed: failed, never selected)"
        tuned = f"{r.counted}/{r.budget:<3}" if r.budget else "—    "
        lines.append(f"{r.cell:<{width}}  {tuned}  {val:<12}  {test:<30}  {chosen}")
    return "\n".join(lines)
