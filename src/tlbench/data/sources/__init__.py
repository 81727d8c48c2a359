"""Dataset sources, looked up by :class:`~tlbench.config.schema.DatasetName`."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from tlbench.config.schema import DatasetName
from tlbench.data.sources import cifar10, digits, fashion_mnist, imagefolder, synthetic
from tlbench.data.sources.base import Source, SourceData
from tlbench.errors import ConfigError

SOURCES: Mapping[DatasetName, Source] = MappingProxyType(
    {
        DatasetName.digits: digits.SOURCE,
        DatasetName.fashion_mnist: fashion_mnist.SOURCE,
        DatasetName.cifar10: cifar10.SOURCE,
        DatasetName.synthetic: synthetic.SOURCE,
        DatasetName.imagefolder: imagefolder.SOURCE,
    }
)


def get_source(name: DatasetName | str) -> Source:
    """The source registered for ``name``; a :class:`ConfigError` lists the known names otherwise."""
    try:
        return SOURCES[DatasetName(name)]
    except ValueError:
        known = ", ".join(item.value for item in DatasetName)
        raise ConfigError(f"unknown dataset {name!r}; known: {known}") from None


__all__ = ["SOURCES", "Source", "SourceData", "get_source"]
