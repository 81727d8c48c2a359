"""``tlbench report [--study NAME] [--out reports/] [--tolerance 0.01]``: a study's report from MLflow."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tlbench.errors import ConfigError

if TYPE_CHECKING:
    from tlbench.report.build import ReportResult  # pandas/matplotlib at import: only for mypy here


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlbench report",
        description="Build reports/<study>/ (report.md, report.html, figures, results.csv, summary.tex) from "
        "the MLflow runs of a study, and attach it to the study's parent run. Nothing is re-trained.",
    )
    parser.add_argument("--study", help="study (MLflow experiment) name; default: the latest study")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="output root (default: reports/)")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.01,
        help="accuracy the recommendation may give up for a cheaper strategy, absolute (0.01 = 1 point)",
    )
    parser.add_argument(
        "--no-mlflow", action="store_true", help="write the files only; log nothing to MLflow"
    )
    parser.add_argument("--list", action="store_true", help="list the studies in the store, latest first")
    return parser


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    if not 0 <= args.tolerance < 1:
        raise ConfigError(f"--tolerance is an absolute accuracy in [0, 1), e.g. 0.01; got {args.tolerance}")
    from tlbench.report.build import build_report  # pandas/matplotlib only once the arguments are valid
    from tlbench.tracking.study import list_studies

    if args.list:
        for study in list_studies():
            print(study.name)
        return 0
    result = build_report(
        args.study,
        out=args.out,
        tolerance=args.tolerance,
        publish=not args.no_mlflow,
        progress=lambda message: print(f"report: {message}", flush=True),
    )
    print()
    print_result(result)
    return 0


def print_result(result: ReportResult) -> None:
    """Where the report went, and its problems (``tlbench report`` and the end of ``tlbench sweep``)."""
    print(f"report of study '{result.study}': {result.directory / 'report.html'}", flush=True)
    print(f"  also: report.md, results.csv, summary.tex, figures/ in {result.directory}/")
    if result.published_to:
        print(
            f"  logged to MLflow parent run {result.published_to} (artifacts under report/; browse: make ui)"
        )
    for problem in result.problems:
        print(f"  note: {problem}")
