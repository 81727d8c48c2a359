"""tlbench sweep: run or resume a study; its arguments, parsed. The work is tlbench.sweep.run.run_sweep."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from tlbench.errors import ConfigError
from tlbench.sweep.spec import PHOTO_SWEEP, SweepRequest, check_request, shipped_sweeps
from tlbench.training.threads import WORKERS_ENV, parse_workers

USAGE = (
    "tlbench sweep [--sweep NAME | --data FOLDER [--class-map MAP]] [--workers N|auto] [--storage URL] "
    "[--study NAME] [key=value ...]"
)
ABOUT = """Run or resume a study: tune every arm on the validation split, then re-run each arm's chosen
configuration on the final seeds (test accuracy reported), tracked in MLflow. Running the same
command again resumes the study. Trailing key=value Hydra overrides extend the sweep's base."""


def _epilog() -> str:
    width = max((len(name) for name, _ in shipped_sweeps()), default=0)
    lines = [f"  {name:<{width}}  {text}" for name, text in shipped_sweeps()]
    return "shipped sweeps (--sweep NAME; default: default, or photos with --data):\n" + "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlbench sweep",
        usage=USAGE,
        description=ABOUT,
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sweep", default=None, help="a name in sweeps/ (listed below) or a path to a sweep YAML file"
    )
    parser.add_argument(
        "--data",
        default=None,
        help="a folder of your photos (class sub-folders, optionally under train/ + val/ or test/): "
        f"runs the '{PHOTO_SWEEP}' protocol on it unless --sweep names another",
    )
    parser.add_argument(
        "--class-map",
        default=None,
        help="with --data: your classes as ImageNet classes, e.g. '{ants: [ant], bees: [bee]}' "
        "(adds as_is: the pretrained classifier used without training)",
    )
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides appended to the sweep's base, e.g. data.resolution=64"
    )
    parser.add_argument("--study", default=None, help="study name (default: the sweep's name)")
    parser.add_argument(
        "--workers",
        default=os.environ.get(WORKERS_ENV, "auto"),
        help=f"local worker processes on the study, or auto (the default, else ${WORKERS_ENV}): on a CPU "
        "one single-threaded worker per usable core, on a GPU one",
    )
    parser.add_argument("--storage", default=None, help="Optuna storage URL (default: a journal file)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a spawned worker
    parser.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)  # the supervisor's plan
    return parser


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        workers = parse_workers(str(args.workers))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    # the parser's destinations are the request's fields
    request = SweepRequest(**{**vars(args), "overrides": tuple(args.overrides), "workers": workers})
    check_request(request)  # a missing folder or sweep file: reported before torch is imported
    from tlbench.sweep.run import run_sweep

    return run_sweep(request)
