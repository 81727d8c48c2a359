"""``tlbench screen [--data PATH] [--backbones a,b,c] [--class-map ants=ant,bees=bee] [overrides ...]``.

Scores every backbone on the data without training (LogME, kNN, cross-validated probe, as_is with a
class map), prints a table and logs one ``role=screen`` MLflow run per backbone. ``--study NAME``
screens a study's data (its sweep's ``base`` overrides and ``backbone`` factor) into its experiment,
so the study's report can set the screen against what training found.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

from tlbench.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlbench screen",
        description="Rank backbones for your data from one forward pass (no training): LogME, kNN accuracy "
        "(leave-one-out on train, and on validation), cross-validated linear-probe accuracy, and as_is "
        "with --class-map. Each backbone is one MLflow run (tag role=screen).",
    )
    data_help = "an image folder (class sub-folders, or train/ + val/) or a built-in dataset; default: digits"
    parser.add_argument("--data", help=data_help)
    backbones_help = (
        "comma-separated config groups (efficientnet_lite0), timm names (hub weights) or "
        "name@/path/checkpoint (file weights); default: the embedded EfficientNet-Lite0, 1 and 2"
    )
    parser.add_argument("--backbones", help=backbones_help)
    parser.add_argument("--class-map", help="as_is class map, e.g. 'ants=ant,bees=bee' (sources joined by |)")
    parser.add_argument("--n-per-class", type=int, help="training images per class (default: the whole pool)")
    resolution_help = "input side in pixels (default: the backbone's pretrained size for folders)"
    parser.add_argument("--resolution", type=int, help=resolution_help)
    parser.add_argument("--knn-k", type=int, default=5, help="neighbours of the kNN scores (default 5)")
    parser.add_argument(
        "--folds", type=int, default=5, help="folds of the probe cross-validation (default 5)"
    )
    parser.add_argument("--experiment", default="tlbench", help="MLflow experiment (default: tlbench)")
    parser.add_argument("--study", help="screen a study's data and backbones into its MLflow experiment")
    parser.add_argument("--no-mlflow", action="store_true", help="print the table only; log nothing")
    parser.add_argument("overrides", nargs="*", help="further Hydra overrides, e.g. data.split_seed=1")
    return parser


def _from_sweep_text(text: str | None, where: str) -> tuple[list[str], list[str]]:
    """(base overrides, backbone factor values) of a sweep definition."""
    import yaml

    sweep = yaml.safe_load(text or "") or {}
    if not isinstance(sweep, dict):
        raise ConfigError(f"{where} is not a sweep definition: cannot tell which data the study trains on")
    factors = sweep.get("factors") or {}
    return [str(o) for o in sweep.get("base") or []], [str(b) for b in factors.get("backbone") or []]


def _study_setup(name: str) -> dict[str, Any]:
    """Where a study's screen goes and what it screens: the study's experiment, parent run and sweep
    (``base`` overrides, ``backbone`` factor); before the study exists, ``sweeps/<name>.yaml``."""
    from tlbench.errors import TrackingError
    from tlbench.sweep.spec import sweep_path
    from tlbench.tracking.names import STUDY_TAG
    from tlbench.tracking.study import find_study, read_study

    try:
        ref = find_study(name)
    except TrackingError:  # not started yet: screen first, into the experiment the sweep will use
        path = sweep_path(name)
        base, backbones = _from_sweep_text(path.read_text(), str(path))
        return {"base": base, "backbones": backbones, "experiment": name, "tags": {STUDY_TAG: name}}
    records = read_study(ref)
    base, backbones = _from_sweep_text(records.sweep_yaml, f"the sweep.yaml of study '{ref.name}'")
    parent = records.parent.run_id if records.parent else None
    return {"base": base, "backbones": backbones, "experiment": ref.experiment_name,
            "parent_run_id": parent, "tags": {STUDY_TAG: ref.name}}  # fmt: skip


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    if args.n_per_class is not None and args.n_per_class < 1:
        raise ConfigError(f"--n-per-class must be >= 1, got {args.n_per_class}")
    from tlbench.screen.scores import ScoreSettings
    from tlbench.screen.screen import (
        data_overrides,
        format_table,
        parse_backbones,
        parse_class_map,
        run_screen,
    )

    try:
        settings = ScoreSettings(knn_k=args.knn_k, probe_folds=args.folds)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    study = _study_setup(args.study) if args.study else {"experiment": args.experiment}
    base = study["base"] if args.study and args.data is None else data_overrides(args.data)
    backbones = (
        study.get("backbones") if args.study and not args.backbones else parse_backbones(args.backbones)
    )
    extra = [f"data.n_per_class={args.n_per_class}"] if args.n_per_class else []
    extra += [f"data.resolution={args.resolution}"] if args.resolution else []
    start = time.perf_counter()
    results = run_screen(
        [*base, *extra, *args.overrides],
        backbones or parse_backbones(None),
        class_map=parse_class_map(args.class_map),
        settings=settings,
        experiment=study["experiment"],
        parent_run_id=study.get("parent_run_id"),
        tags=study.get("tags"),
        track=not args.no_mlflow,
        progress=lambda message: print(f"screen: {message}", flush=True),
    )
    print()
    print(format_table(results))
    wall = time.perf_counter() - start
    print(
        f"\n{len(results)} backbone(s) screened in {wall:.1f} s wall "
        "(* best per score; extract s is about 0 on a feature-cache hit)"
    )
    for result in results:
        for note in result.notes:
            print(f"  note ({result.backbone}): {note}")
    logged = [r for r in results if r.run_id]
    if logged:
        where = study["experiment"]
        print(f"MLflow: {len(logged)} run(s) tagged role=screen in experiment '{where}' (browse: make ui)")
    return 0
