"""Check the learning-curve method on a study: fit on small sizes, predict the larger, print the errors.

``python -m tlbench.report.curve_check data_scaling [--fit-max-n 20]`` (reads MLflow only; nothing is
trained). Run it on the ``data_scaling`` sweep to see how far the extrapolation of ``report.outlook`` can
be trusted.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from tlbench.report.collect import trials_table
from tlbench.report.formatting import pct, signed_pp, size_label
from tlbench.report.learning_curve import holdout_check
from tlbench.tracking.study_reader import find_study, read_study


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", default="data_scaling")
    parser.add_argument("--fit-max-n", type=float, default=20.0)
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    ref = find_study(args.study, tracking_uri=args.tracking_uri)
    trials = trials_table(read_study(ref, tracking_uri=args.tracking_uri).children)
    points = holdout_check(trials, fit_max_n=args.fit_max_n)
    if not points:
        print(f"study {ref.name}: no strategy has two sizes <= {args.fit_max_n:g} and a larger one")
        return 1
    print(
        f"study {ref.name}: curves fitted on n <= {args.fit_max_n:g} per class, mean over the seeds' curves"
    )
    for p in points:
        print(
            f"  {p.strategy:<14} {size_label(p.n_per_class):<14} predicted {pct(p.predicted):>6} "
            f"measured {pct(p.observed):>6} error {signed_pp(p.error)}"
        )
    errors = [abs(p.error) for p in points]
    print(
        f"  mean absolute error {100 * sum(errors) / len(errors):.1f} pp, largest {100 * max(errors):.1f} pp"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
