"""``tlbench export --study S [--size N] [--strategy X]``: a study's winner as a registered MLflow model."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlbench export",
        description="Retrain the arm the study's report recommends (at the largest data size unless --size) "
        "once more on all labelled images (train + validation) with its chosen hyperparameters, and register "
        "it in MLflow under the study's name with alias 'champion': a pyfunc model with its preprocessing "
        "and class names inside (tlbench predict, mlflow models serve).",
        epilog="Then: tlbench predict --model models:/<study>@champion photos/   or   "
        "mlflow models serve -m models:/<study>@champion --env-manager local",
    )
    parser.add_argument(
        "--study", required=True, help="the study (MLflow experiment) to export the winner of"
    )
    parser.add_argument(
        "--size", help="data size: images per class of the arm to export, or 'all' (default: the largest)"
    )
    parser.add_argument(
        "--strategy", help="export this strategy's arm instead of the recommended one (e.g. full_finetune)"
    )
    return parser


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our progress lines, no bars
    from tlbench.export import export_winner

    exported = export_winner(args.study, size=args.size, strategy=args.strategy)
    test = f", {exported.test_acc:.1%} test accuracy" if exported.test_acc is not None else ""
    arm = f"{exported.strategy} at n={exported.n_per_class}{test}"
    print(f"{exported.model_uri}: {arm} (version {exported.version})")
    print(f"  predict: tlbench predict --model {exported.model_uri} PATH...")
    print(f"  serve:   mlflow models serve -m {exported.model_uri} --env-manager local --port 5001")
    return 0
