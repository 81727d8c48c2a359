"""``tlbench config k=v ...``: print the composed, validated config as YAML."""

from __future__ import annotations

from collections.abc import Sequence

import yaml

from tlbench.config import load_config
from tlbench.config.schema import as_plain_dict


def main(argv: Sequence[str]) -> int:
    print(yaml.safe_dump(as_plain_dict(load_config(argv)), sort_keys=False), end="")
    return 0
