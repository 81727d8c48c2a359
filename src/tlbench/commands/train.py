"""``tlbench train k=v ...``: one trial with Hydra overrides, tracked in MLflow."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tlbench.commands.overrides import check_paths, usage, wants_help
from tlbench.config import load_config


def main(argv: Sequence[str]) -> int:
    if wants_help(argv):
        print(usage("train"))
        return 0
    cfg = load_config(argv)
    check_paths(cfg, overrides=argv)  # a missing folder or file: one line now, not after torch loads
    from tlbench.run import train  # heavy imports only once the config is known to be valid

    result = train(cfg)
    width = max(len(k) for k in result.metrics)
    print(f"\nstatus: {result.status}")
    for key in sorted(result.metrics):
        print(f"  {key:<{width}}  {result.metrics[key]:.6g}")
    if result.run_id:
        print(f"MLflow run {result.run_id} in experiment '{cfg.tracking.experiment}' (browse: make ui)")
    if not result.completed:
        print(f"trial did not complete: {result.status}", file=sys.stderr)
        return 1
    return 0
