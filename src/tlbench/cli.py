"""``tlbench <command>``: the entry point, and the commands that only parse arguments and call one function
(the others are in ``commands/``, imported only when they run: ``tlbench --help`` stays instant)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tlbench.errors import ConfigError, TlbenchError
from tlbench.training.threads import passive_wait_default

Command = Callable[[Sequence[str]], int]
# commands that left the package -> what to run instead (scripts calling them get that, not "unknown command")
MOVED = {
    "bench": "the benchmark moved out of the package: run `make bench`, or from the repository root "
    "`.venv/bin/python -m benchmarks [--only STEP ...] [--repeats N] [--threads N] [--out PATH] "
    "[--budget-min M]` (docs/benchmarks.md)",
}


def ui(argv: Sequence[str]) -> int:
    """``tlbench ui``: MLflow's UI for the configured tracking store, bound to 127.0.0.1."""
    from tlbench.tracking import resolve_tracking_uri
    from tlbench.tracking.runs import redact_password

    parser = argparse.ArgumentParser(prog="tlbench ui")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    uri = resolve_tracking_uri(None)
    shown = redact_password(uri)
    if uri.startswith(("http://", "https://")):  # a tracking server serves its own UI
        print(f"MLflow's UI is served by the tracking server: open {shown}")
        return 0
    command = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(args.port)]
    # the store's URI (it may hold a password) goes through the environment, not the command line `ps` shows
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri}
    print(f"MLflow UI for {shown} on http://127.0.0.1:{args.port} (Ctrl-C to stop)")
    os.execve(sys.executable, command, env)  # argument list, no shell: nothing from config reaches a shell
    return 0  # pragma: no cover


def report(argv: Sequence[str]) -> int:
    """``tlbench report [--study NAME] [--out reports/] [--tolerance 0.01]``: a study's report from MLflow."""
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
    args = parser.parse_args(argv)
    if not 0 <= args.tolerance < 1:
        raise ConfigError(f"--tolerance is an absolute accuracy in [0, 1), e.g. 0.01; got {args.tolerance}")
    from tlbench.report.build import (  # pandas/matplotlib only once the arguments are valid
        build_report,
        print_result,
    )
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


def export(argv: Sequence[str]) -> int:
    """``tlbench export --study S [--size N] [--strategy X]``: a study's winner as a registered model."""
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
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our progress lines, no bars
    from tlbench.export import export_winner

    exported = export_winner(args.study, size=args.size, strategy=args.strategy)
    test = f", {exported.test_acc:.1%} test accuracy" if exported.test_acc is not None else ""
    arm = f"{exported.strategy} at n={exported.n_per_class}{test}"
    print(f"{exported.model_uri}: {arm} (version {exported.version})")
    print(f"  predict: tlbench predict --model {exported.model_uri} PATH...")
    print(f"  serve:   mlflow models serve -m {exported.model_uri} --env-manager local --port 5001")
    return 0


def predict(argv: Sequence[str]) -> int:
    """``tlbench predict --model models:/<study>@champion PATH... [--out FILE]``: images -> CSV."""
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
    args = parser.parse_args(argv)
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
    with args.out.open("w", newline="") if args.out else contextlib.nullcontext(sys.stdout) as out:
        for prediction in write_csv(predict_files(model, inputs.files), out):
            if prediction.ok:
                classified += 1
            else:
                print(f"tlbench predict: {prediction.path}: {prediction.error}", file=sys.stderr)
                failed += 1
    if args.out:
        print(f"tlbench predict: {classified} image(s) classified -> {args.out}", file=sys.stderr)
    return 1 if failed else 0


# command -> (what runs it: a function, or "module:function" of tlbench imported when it runs; help)
COMMANDS: dict[str, tuple[Command | str, str]] = {
    "train": ("commands.overrides:train", "run one trial: tlbench train [hydra overrides ...]"),
    "config": ("commands.overrides:config", "print the composed config: tlbench config [overrides ...]"),
    "ui": (ui, "open MLflow's UI on 127.0.0.1"),
    "sweep": ("commands.sweep:main", "run or resume a study: tlbench sweep --sweep NAME [--workers N]"),
    "dashboard": ("commands.dashboard:main", "optuna-dashboard on a study, 127.0.0.1: [--study NAME]"),
    "report": (report, "a study's report from MLflow: tlbench report [--study NAME]"),
    "screen": ("commands.screen:main", "rank backbones without training: tlbench screen [--data PATH]"),
    "export": (export, "register a study's winner as an MLflow model: tlbench export --study S"),
    "predict": (predict, "classify images: tlbench predict --model models:/S@champion PATH..."),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "usage: tlbench <command> [args]\n\ncommands:\n" + "\n".join(lines)


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("alembic", "mlflow", "urllib3", "matplotlib", "PIL", "filelock", "timm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    passive_wait_default()  # before any command imports torch (its OpenMP runtime reads it once)
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        said = MOVED.get(name) or f"unknown command '{name}'\n\n{_usage()}"
        print(f"tlbench: {said}", file=sys.stderr)
        return 2
    setup_logging()
    try:
        run = COMMANDS[name][0]
        if isinstance(run, str):
            module, _, function = run.partition(":")
            run = getattr(importlib.import_module(f"tlbench.{module}"), function)
        return int(run(rest))
    except TlbenchError as exc:
        print(f"tlbench {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tlbench {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
