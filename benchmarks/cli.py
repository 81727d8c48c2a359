"""``python -m benchmarks`` (``make bench``): the performance benchmark, ratios of interleaved,
repeated measurements.

Prints one line per measurement and a table at the end, and writes ``reports/bench.json`` as
``{"ratios": {...}, "details": {...}}``. See docs/benchmarks.md for what each ratio means. Run it
from the repository root (``benchmarks`` is a directory of modules there, not part of the package).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from tlbench.errors import ConfigError, TlbenchError
from tlbench.training.threads import passive_wait_default

if TYPE_CHECKING:
    from benchmarks.cases import Plan

STEPS = ("finetune", "eager", "loaded", "probe", "partial", "sweep")


def _defaults() -> Plan:
    from benchmarks.cases import Plan

    return Plan()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--out", default="reports/bench.json", help="where to write the JSON results")
    defaults = _defaults()
    parser.add_argument(
        "--repeats", type=int, default=defaults.repeats, help="interleaved repeats per ratio (>= 3)"
    )
    parser.add_argument(
        "--finetune-repeats",
        type=int,
        default=defaults.finetune_repeats,
        help="repeats of the fine-tune trio",
    )
    parser.add_argument(
        "--sweep-repeats", type=int, default=defaults.sweep.repeats, help="at most this many sweep pairs"
    )
    parser.add_argument(
        "--budget-min",
        type=float,
        default=defaults.budget_s / 60.0,
        help="repeat sweep pairs only while within this budget",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads per run; 0 = auto (1 on a CPU-only machine, torch's default with a GPU)",
    )
    parser.add_argument("--only", nargs="+", choices=STEPS, default=list(STEPS), help="measure only these")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Hydra override for every trial case (repeatable; e.g. --set trainer.channels_last=false); "
        "each ratio's own settings still apply on top, the sweep step keeps its sweep file's base",
    )
    parser.add_argument("--keep-workdir", action="store_true", help="keep the temporary MLflow/Optuna stores")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command; a bad option is a one-line error (exit 2), as ``tlbench`` commands do."""
    passive_wait_default()  # before anything imports torch: its OpenMP runtime reads the policy once
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except TlbenchError as exc:
        print(f"python -m benchmarks: error: {exc}", file=sys.stderr)
        return 2


def _main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    if min(args.repeats, args.finetune_repeats, args.sweep_repeats) < 1:
        raise ConfigError("--repeats, --finetune-repeats and --sweep-repeats must be >= 1")
    if args.threads < 0:
        raise ConfigError(f"--threads must be >= 0 (0 = auto), got {args.threads}")
    from benchmarks.cases import Plan
    from benchmarks.measure import auto_threads
    from benchmarks.run import run_bench

    plan = Plan(
        repeats=args.repeats,
        finetune_repeats=args.finetune_repeats,
        budget_s=args.budget_min * 60.0,
        threads=auto_threads(args.threads or None),
        base_overrides=tuple(args.overrides),
    )
    plan = replace(plan, sweep=replace(plan.sweep, repeats=args.sweep_repeats))
    if plan.base_overrides:  # a bad --set is one line now, not a failed measurement per step
        from benchmarks.cases import config

        for case in ("finetune", "probe", "partial"):  # a key may be valid for one strategy only
            config(plan.overrides(case))
    out = Path(args.out).resolve()  # the bench runs in a temporary directory
    run_bench(plan, out=out, only=args.only, keep_workdir=args.keep_workdir)
    return 0
