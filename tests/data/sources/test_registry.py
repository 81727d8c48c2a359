from __future__ import annotations

import pytest

from tlbench.config.schema import DatasetName
from tlbench.data.sources import SOURCES, get_source
from tlbench.errors import ConfigError


@pytest.mark.parametrize("name", list(DatasetName))
def test_every_dataset_name_has_a_source(name: DatasetName) -> None:
    # a new DatasetName without a registered source fails here, not mid-sweep
    assert get_source(name) is SOURCES[name] and get_source(name.value) is SOURCES[name]


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="known: digits"):
        get_source("mnist")
