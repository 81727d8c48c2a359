"""What every dataset source hands to the split logic, and how sources are described."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tlbench.config.schema import DataConfig
from tlbench.data.containers import TensorSplit


@dataclass(frozen=True)
class SourceData:
    """Decoded pools of one dataset at the target resolution.

    ``val`` and ``test`` are ``None`` when the source has no such split of its own; the split logic
    then carves them from ``train`` with ``split_seed``.

    Attributes:
        train: The source's training pool (or its only pool).
        val: The source's own validation split, if any.
        test: The source's own test split, if any.
        class_names: Label ``i`` is ``class_names[i]``.
        location: Where the data was read from (a path, or the package that generated it).
        origins: Split name -> where that split's samples came from, for the run description.
    """

    train: TensorSplit
    val: TensorSplit | None
    test: TensorSplit | None
    class_names: tuple[str, ...]
    location: str
    origins: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    """A dataset source: how to load it, and what decides whether a cached load is still valid.

    Attributes:
        load: Reads and decodes the dataset for a config.
        cache_key: Cheap key of everything ``load``'s result depends on (paths, file times,
            resolution), so a sweep in one process decodes each dataset once.
    """

    load: Callable[[DataConfig], SourceData]
    cache_key: Callable[[DataConfig], Hashable]


def resolved_root(cfg: DataConfig) -> Path | None:
    """``data.root`` made absolute (relative paths are relative to the working directory)."""
    return Path(cfg.root).expanduser().resolve() if cfg.root else None


def file_stamps(paths: list[Path]) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of existing files: changes whenever one of them is replaced."""
    stamps = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue
        stamps.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(stamps)


def default_cache_dir(name: str) -> Path:
    """Where downloads go when ``data.root`` is not set."""
    return Path.home() / ".cache" / "tlbench" / name
