from __future__ import annotations

from pathlib import Path

import pytest

from tlbench import packaged
from tlbench.errors import ConfigError
from tlbench.packaged import packaged_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["conf", "sweeps"])
def test_source_tree_links_to_the_top_level_folders(name: str) -> None:
    # in the source tree the package's folder is a link to the top-level one (edits apply at once)
    inside = REPO / "src" / "tlbench" / packaged.PACKAGED[name]
    assert inside.is_symlink() and inside.resolve() == REPO / name
    assert packaged_dir(name, env="X") == REPO / name


def test_unknown_folder_is_a_programming_error() -> None:
    # only conf and sweeps ship with the package
    with pytest.raises(ValueError, match="one of conf, sweeps"):
        packaged_dir("docs", env="X")


def test_missing_folder_says_to_reinstall_or_set_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    # an install without its package data gets an actionable message, not a Hydra traceback
    monkeypatch.setitem(packaged.PACKAGED, "conf", "_not_there")
    with pytest.raises(ConfigError, match=r"reinstall tlbench \(pip install \.\), or set TLBENCH_CONFIG_DIR"):
        packaged_dir("conf", env="TLBENCH_CONFIG_DIR")
