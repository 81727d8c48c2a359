"""Racing against a fixed seed budget, on a finished study: the verdict from its first k final seeds.

Racing runs every arm's first round of final seeds (the sweep's ``final.seeds``) and then adds seeds
only to arms still undecided. A study with a fixed budget of those k seeds and no race would run exactly
the first round: the same chosen configurations on the same seeds. So its verdict is the report's
analysis restricted to final seeds <= k, with no training. This prints both verdicts per data size and
the device-hours of each set of final runs::

    PYTHONPATH=src:. .venv/bin/python -m benchmarks.racing --study default --seeds 3

(MLFLOW_TRACKING_URI, else ``sqlite:///mlflow.db`` here, as for ``tlbench report``.)
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import pandas as pd

from tlbench.report.build import analyse, verdicts
from tlbench.report.recommend import Recommendation
from tlbench.report.tables import final_results
from tlbench.tracking.names import BUDGET_CHECK, DEVICE_HOURS, FINAL, ROLE, TUNE
from tlbench.tracking.study import read_test_predictions


def first_seeds(trials: pd.DataFrame, k: int) -> pd.DataFrame:
    """The study as a fixed budget of seeds 1..k would have run it: later final seeds dropped."""
    seeds = pd.to_numeric(trials["seed"], errors="coerce")
    return trials[(trials[ROLE] != FINAL) | (seeds <= k)]


def _line(rec: Recommendation) -> str:
    r, b = rec.recommended, rec.best
    best = "" if r.strategy == b.strategy else f" (most accurate: {b.strategy} {b.acc:.1%}, {b.seeds} seeds)"
    return f"{r.strategy} {r.acc:.1%} over {r.seeds} seeds{best}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.racing", description=__doc__.split("\n")[0])
    parser.add_argument("--study", required=True)
    parser.add_argument("--seeds", type=int, required=True, help="k: the fixed budget's seeds (1..k)")
    parser.add_argument("--tolerance", type=float, default=0.01)
    args = parser.parse_args(argv)
    uri = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    study = analyse(args.study, tolerance=args.tolerance, tracking_uri=uri)
    fixed = first_seeds(study.trials, args.seeds)
    raced = study.recommendations
    ids = [str(r) for r in final_results(fixed)["run_id"]]
    _, _, fixed_verdicts = verdicts(
        fixed, read_test_predictions(ids, tracking_uri=uri), tolerance=args.tolerance
    )
    fixed_recs = {r.n_per_class: r for r in fixed_verdicts}
    for label, frame in (("raced", study.trials), (f"seeds 1..{args.seeds}", fixed)):
        finals = final_results(frame)
        spent = frame[frame[ROLE].isin([TUNE, BUDGET_CHECK, FINAL])]  # not the export's retraining
        total = pd.to_numeric(spent[DEVICE_HOURS], errors="coerce").sum()
        print(
            f"{label}: {len(finals)} final runs, {finals[DEVICE_HOURS].sum():.4f} device-hours of "
            f"finals, {total:.4f} with tuning and budget checks"
        )
    for rec in raced:
        other = fixed_recs.get(rec.n_per_class)
        same = other is not None and other.recommended.strategy == rec.recommended.strategy
        print(f"n={rec.n_per_class}: raced -> {_line(rec)}")
        print(
            f"{'':>{len(rec.n_per_class) + 2}}  seeds 1..{args.seeds} -> {_line(other) if other else '—'}"
            f"{'  (same)' if same else '  (DIFFERENT)'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
