"""Compose a typed :class:`RunConfig` from ``conf/`` and Hydra overrides (Compose API, no @hydra.main).

Using the Compose API everywhere (single trials and sweeps alike) keeps one code path, lets sweeps
run trials in-process, and lets us turn Hydra/OmegaConf exceptions into one-line messages.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tlbench.config.schema import RunConfig
from tlbench.errors import ConfigError
from tlbench.packaged import packaged_dir

SCHEMA_NAME = "tlbench_schema"
CONFIG_DIR_ENV = "TLBENCH_CONFIG_DIR"


def config_dir() -> Path:
    """The ``conf/`` directory: ``$TLBENCH_CONFIG_DIR``, else the one shipped in the package."""
    override = os.environ.get(CONFIG_DIR_ENV)
    path = Path(override).absolute() if override else packaged_dir("conf", env=CONFIG_DIR_ENV)
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"no config.yaml in {path}: set {CONFIG_DIR_ENV} to tlbench's conf/ directory")
    return path


def register_schema() -> None:
    ConfigStore.instance().store(name=SCHEMA_NAME, node=RunConfig)


# Mapping-valued fields: a plain `key={...}` override replaces the mapping (Hydra would merge).
_REPLACED_MAPPINGS = ("strategy.class_map", "tags")


def compose_dictconfig(overrides: Sequence[str] = ()) -> DictConfig:
    """Hydra composition with the typed schema; raises :class:`ConfigError` on any user error."""
    register_schema()
    hydra_overrides, replacements = _split_mapping_overrides(overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=hydra_overrides)
        for key, value in replacements:
            OmegaConf.update(cfg, key, value, merge=False)
        return cfg
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(_explain(exc)) from None
    finally:
        GlobalHydra.instance().clear()


def _split_mapping_overrides(overrides: Sequence[str]) -> tuple[list[str], list[tuple[str, object]]]:
    parser = OverridesParser.create()
    hydra_overrides: list[str] = []
    replacements: list[tuple[str, object]] = []
    for text in overrides:
        key = text.split("=", 1)[0]
        if key in _REPLACED_MAPPINGS and "=" in text:
            try:
                value = parser.parse_overrides([text])[0].value()
            except HydraException as exc:
                raise ConfigError(_explain(exc)) from None
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{key} takes a mapping, e.g. {key}='{{ants: [ant], bees: [bee]}}'; got {value!r}"
                )
            replacements.append((key, value))
        else:
            hydra_overrides.append(text)
    return hydra_overrides, replacements


def to_run_config(cfg: DictConfig) -> RunConfig:
    """Typed conversion (runs every ``__post_init__`` check)."""
    try:
        obj = OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except OmegaConfBaseException as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ConfigError):
            raise ConfigError(str(cause)) from None
        raise ConfigError(_explain(exc)) from None
    if not isinstance(obj, RunConfig):  # pragma: no cover - the schema is the config's root
        raise ConfigError(f"conf/config.yaml must use the '{SCHEMA_NAME}' schema")
    return obj


def load_config(overrides: Sequence[str] = ()) -> RunConfig:
    """Compose ``conf/`` with Hydra-style overrides into a validated :class:`RunConfig`."""
    return to_run_config(compose_dictconfig(overrides))


def _explain(exc: BaseException) -> str:
    """Hydra/OmegaConf exception -> one actionable line (with 'did you mean' where possible)."""
    message = str(exc).strip()
    cause = exc.__cause__
    if cause is not None and str(cause).strip() and str(cause).strip() not in message:
        message = f"{message}: {str(cause).strip()}"
    # OmegaConf appends a multi-line 'full_key/object_type' block: keep the first lines only.
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("full_key:", "object_type=", "reference_type="))]
    text = " ".join(lines).split(" Config search path:")[0]
    # Hydra suggests '+key=value' for any unknown key; on a typed schema that can only fail later.
    text = re.sub(r"\s*To append to your config use \+\S+?:?(?=\s|$)", "", text)
    missing = re.search(r"Key '([^']+)' not in '(\w+)'|Key '([^']+)' is not in struct", text)
    full = re.search(r"Could not override '([^']+)'", text)
    if missing or full:
        bad_path = full.group(1) if full else (missing.group(1) or missing.group(3)) if missing else ""
        hint = _suggest_key(bad_path)
        if hint and hint != bad_path:
            text += f" — did you mean '{hint}'?"
    return f"invalid configuration: {text}"


def _all_paths(node: object, prefix: str = "") -> list[str]:
    if not isinstance(node, DictConfig):
        return []
    out = []
    for key in node:
        path = f"{prefix}{key!s}"
        out.append(path)
        out.extend(_all_paths(node._get_node(str(key)), f"{path}."))
    return out


def _suggest_key(dotted: str) -> str | None:
    """The config path the user most likely meant: a close sibling, else a same-named key elsewhere
    (``freeze_depth`` -> ``strategy.freeze_depth``), else a close match anywhere."""
    parent, _, leaf = dotted.rpartition(".")
    root: object = OmegaConf.structured(RunConfig)
    node = root
    for part in parent.split(".") if parent else []:
        if not isinstance(node, DictConfig) or part not in node:
            node = None
            break
        node = node[part]
    if isinstance(node, DictConfig):
        close = difflib.get_close_matches(leaf, [str(k) for k in node], n=1)
        if close:
            return f"{parent}.{close[0]}" if parent else close[0]
    paths = _all_paths(root)
    same_leaf = [p for p in paths if p.rsplit(".", 1)[-1] == leaf and p != dotted]
    if same_leaf:
        return min(same_leaf, key=len)
    leaves = {p.rsplit(".", 1)[-1]: p for p in sorted(paths, key=len, reverse=True)}
    close = difflib.get_close_matches(leaf, list(leaves), n=1)
    return leaves[close[0]] if close else None
