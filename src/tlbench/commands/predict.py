"""``tlbench predict --model models:/<study>@champion PATH... [--out FILE]``: classify images (CSV out)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlbench predict",
        description="Classify image files with a registered model and write a CSV of path, class, "
        "probability. Folders are read recursively for image files. A file that is not an image is "
        "reported on its own line and the others are still classified (exit status 1 when any failed).",
        epilog="The model is looked up in the MLflow store of MLFLOW_TRACKING_URI (default: "
        "sqlite:///mlflow.db here). A study's winner exists once `tlbench export --study S` (or a sweep "
        "with export) ran.",
    )
    parser.add_argument(
        "--model",
        required=True,
        metavar="URI",
        help="MLflow model URI: models:/<study>@champion, models:/<study>/<version>, runs:/<run id>/model",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders")
    parser.add_argument("--out", type=Path, metavar="FILE", help="write the CSV here (default: stdout)")
    return parser


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    from tlbench.export import collect, predict_files, write_csv

    inputs = collect(args.paths)
    failed = classified = 0
    for path in inputs.missing:
        print(f"tlbench predict: {path}: no such file or folder", file=sys.stderr)
        failed += 1
    if inputs.skipped:
        shown = ", ".join(str(p) for p in inputs.skipped[:3]) + (", ..." if len(inputs.skipped) > 3 else "")
        print(
            f"tlbench predict: skipped {len(inputs.skipped)} non-image file(s) in folders: {shown}",
            file=sys.stderr,
        )
    if not inputs.files:
        print("tlbench predict: no image files to classify", file=sys.stderr)
        return 1
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a CSV on stdout, no bars
    from tlbench.tracking.registry import load_model

    model = load_model(args.model)
    out = args.out.open("w", newline="") if args.out else sys.stdout
    try:
        for prediction in write_csv(predict_files(model, inputs.files), out):
            if prediction.ok:
                classified += 1
            else:
                print(f"tlbench predict: {prediction.path}: {prediction.error}", file=sys.stderr)
                failed += 1
    finally:
        if args.out:
            out.close()
    if args.out:
        print(f"tlbench predict: {classified} image(s) classified -> {args.out}", file=sys.stderr)
    return 1 if failed else 0
