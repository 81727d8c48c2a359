"""``tlbench config k=v ...``: print the composed, validated config as YAML."""

from __future__ import annotations

from collections.abc import Sequence

import yaml

from tlbench.commands.overrides import check_paths, usage, wants_help
from tlbench.config import load_config
from tlbench.config.schema import as_plain_dict


def main(argv: Sequence[str]) -> int:
    if wants_help(argv):
        print(usage("config"))
        return 0
    cfg = load_config(argv)
    check_paths(cfg, overrides=argv)
    print(yaml.safe_dump(as_plain_dict(cfg), sort_keys=False), end="")
    return 0
