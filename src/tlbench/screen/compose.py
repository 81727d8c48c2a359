"""From what a user types (a data folder, backbone names) to the Hydra overrides of each screened backbone."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tlbench.errors import ConfigError
from tlbench.models.network import EMBEDDED

DEFAULT_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
BUILTIN_DATASETS = ("digits", "fashion_mnist", "cifar10", "synthetic")


def data_overrides(data: str | None) -> list[str]:
    """``None`` or a built-in dataset name -> ``data=<name>``; anything else is an image folder path."""
    if data is None or data in BUILTIN_DATASETS:
        return [f"data={data or 'digits'}"]
    root = Path(data).expanduser()
    if not root.is_dir():
        raise ConfigError(
            f"--data {data}: no such folder; give a folder of class sub-folders (or train/ + val/), "
            f"or one of {', '.join(BUILTIN_DATASETS)}"
        )
    return ["data=imagefolder", f"data.root={root.resolve()}"]


def backbone_overrides(item: str, *, groups: Sequence[str]) -> list[str]:
    """A config group (``efficientnet_lite1``), a timm name (hub, or embedded where shipped), or
    ``timm_name@/path/to/checkpoint`` (file weights)."""
    name, _, path = item.strip().partition("@")
    if not name:
        raise ConfigError(
            f"empty backbone in '{item}': give a config group ({', '.join(groups)}) or a timm name"
        )
    if path:
        return [f"backbone.name={name}", "backbone.weights=file", f"backbone.weights_path={path}"]
    if name in groups:
        return [f"backbone={name}"]
    weights = "embedded" if name in EMBEDDED else "hub"
    return [f"backbone.name={name}", f"backbone.weights={weights}"]


def parse_backbones(text: str | None) -> list[str]:
    """``"a,b,c"`` -> ``["a", "b", "c"]`` (default: the three embedded EfficientNet-Lites)."""
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    if len(set(items)) != len(items):
        raise ConfigError(f"--backbones lists a backbone twice: {text}")
    return items or list(DEFAULT_BACKBONES)


def parse_class_map(text: str | None) -> dict[str, list[str]]:
    """The sweep's form ``"{ants: [ant], bees: [bee, honeycomb]}"``, or the short
    ``"ants=ant,bees=bee|honeycomb"`` -> ``{"ants": ["ant"], "bees": ["bee", "honeycomb"]}``."""
    if not text:
        return {}
    if text.strip().startswith("{"):
        return _mapping_class_map(text)
    out: dict[str, list[str]] = {}
    for entry in text.split(","):
        target, sep, sources = entry.partition("=")
        names = [s.strip() for s in sources.split("|") if s.strip()]
        if not sep or not target.strip() or not names:
            raise ConfigError(
                f"--class-map entry '{entry}' is not target=source[|source...], e.g. 'ants=ant,bees=bee'"
            )
        out[target.strip()] = names
    return out


def _mapping_class_map(text: str) -> dict[str, list[str]]:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"--class-map {text!r} is not a mapping like '{{ants: [ant], bees: [bee]}}'")
    out: dict[str, list[str]] = {}
    for target, sources in value.items():
        names = [str(s) for s in (sources if isinstance(sources, list) else [sources])]
        if not names:
            raise ConfigError(f"--class-map: class '{target}' maps to no source class")
        out[str(target)] = names
    return out
