"""A typed :class:`RunConfig` from ``conf/`` and Hydra overrides (the Compose API: one code path for
trials and sweeps, in-process), and tlbench's one translator of Hydra/OmegaConf errors into one-line
messages: the run config's and a sweep file's (:func:`typed_mapping`)."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, GrammarParseError, OmegaConfBaseException

from tlbench.config.schema import RunConfig
from tlbench.errors import ConfigError

SCHEMA_NAME = "tlbench_schema"
CONFIG_DIR_ENV = "TLBENCH_CONFIG_DIR"


# conf/ and sweeps/ stay at the repository root, where users edit them; the package reaches them as
# tlbench/_conf and _sweeps: links in the source tree, copied as package data into a wheel (pyproject.toml).
PACKAGED = {"conf": "_conf", "sweeps": "_sweeps"}


def packaged_dir(name: str, *, env: str) -> Path:
    """The package's copy of the top-level folder ``name``; ``env`` (named in the error) points elsewhere."""
    if name not in PACKAGED:
        raise ValueError(f"no packaged folder {name!r}: one of {', '.join(PACKAGED)}")
    root = files("tlbench")
    # Hydra and the sweep loader read a real folder: an unpacked install, not one inside a zip.
    path = root / PACKAGED[name] if isinstance(root, Path) else None
    if path is None or not path.is_dir():
        raise ConfigError(
            f"tlbench's {name}/ folder is missing from the package ({path or root}): "
            f"reinstall tlbench (pip install .), or set {env} to a {name}/ folder"
        )
    return path.resolve()  # the source tree's link -> the top-level folder, as error messages name it


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


def load_config(overrides: Sequence[str] = ()) -> RunConfig:
    """Compose ``conf/`` with Hydra-style overrides into a validated :class:`RunConfig`."""
    register_schema()
    hydra_overrides, replacements = _split_mapping_overrides(overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=hydra_overrides)
        for key, value in replacements:
            OmegaConf.update(cfg, key, value, merge=False)
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(_explain(exc)) from None
    finally:
        GlobalHydra.instance().clear()
    return to_run_config(cfg)


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
        obj = OmegaConf.to_object(cfg)  # a ConfigError of a check is no OmegaConf error: it passes through
    except OmegaConfBaseException as exc:
        raise ConfigError(_explain(exc)) from None
    if not isinstance(obj, RunConfig):  # pragma: no cover - the schema is the config's root
        raise ConfigError(f"conf/config.yaml must use the '{SCHEMA_NAME}' schema")
    return obj


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
    root = OmegaConf.structured(RunConfig)
    node = OmegaConf.select(root, parent, default=None) if parent else root
    if isinstance(node, DictConfig):
        close = _closest(leaf, [str(k) for k in node])
        if close:
            return f"{parent}.{close}" if parent else close
    paths = _all_paths(root)
    same_leaf = [p for p in paths if p.rsplit(".", 1)[-1] == leaf and p != dotted]
    if same_leaf:
        return min(same_leaf, key=len)
    leaves = {p.rsplit(".", 1)[-1]: p for p in sorted(paths, key=len, reverse=True)}
    close = _closest(leaf, list(leaves))
    return leaves[close] if close else None


def _closest(word: str, options: Sequence[str]) -> str | None:
    """The option a misspelt ``word`` most likely meant (difflib's ratio >= 0.6), if any."""
    close = difflib.get_close_matches(word, options, n=1)
    return close[0] if close else None


# --- a user's YAML mapping typed by a dataclass schema (the sweep file) ---
def typed_mapping(
    schema: type, data: Mapping[str, Any], *, prefix: str = "", root: str = "the file"
) -> dict[str, Any]:
    """``data`` (a user's YAML mapping) merged into a dataclass schema one top-level key at a time; a bad
    key or value is one :class:`ConfigError` line: the key path (``prefix``: ``data``'s path in its file;
    ``root``: the top level's name), what was expected (a field's metadata ``{"expect": ..., "each": ...}``
    may say it in words), what was found, and for a misspelt key the likely one."""
    config = OmegaConf.structured(schema)
    for key, value in data.items():
        try:
            config = OmegaConf.merge(config, {key: value})
        except OmegaConfBaseException as exc:
            raise ConfigError(_explain_merge(exc, schema, key, value, prefix=prefix, root=root)) from None
    plain = OmegaConf.to_container(config, resolve=False)  # overrides keep their ${...} as written
    assert isinstance(plain, dict)
    return {str(k): v for k, v in plain.items()}


def _explain_merge(
    exc: OmegaConfBaseException, schema: type, top: Any, value: Any, *, prefix: str, root: str
) -> str:
    full_key = str(exc.full_key or top)
    found, path = _locate({top: value}, full_key)
    path = prefix + path.removeprefix("params") if prefix else path
    if isinstance(exc, ConfigKeyError) and dataclasses.is_dataclass(exc.object_type):
        allowed = [f.name for f in dataclasses.fields(exc.object_type)]
        parent = path[: -len(str(exc.key))].rstrip(".") or root
        close = _closest(str(exc.key), allowed)
        hint = f" — did you mean '{close}'?" if close else f" (allowed: {', '.join(allowed)})"
        return f"unknown key '{exc.key}' in {parent}{hint}"
    got = "" if found is _MISSING else f", got {found!r}"
    if isinstance(exc, GrammarParseError):
        shown = "" if found is _MISSING else f" ({found!r})"
        return f"{path}{shown} is not a valid ${{...}} interpolation: {_first_line(exc)}"
    expected = _expected(exc, schema, top, full_key)
    if expected is None:
        return f"{path}: {_first_line(exc)}{got}"
    return f"{path} must be {expected}{got}"


def _first_line(exc: OmegaConfBaseException) -> str:
    return str(getattr(exc, "msg", "") or exc).splitlines()[0]


def _expected(exc: OmegaConfBaseException, schema: type, top: Any, full_key: str) -> str | None:
    """What the schema declares for the value that failed, in words; None where it cannot be told."""
    owner, key = exc.object_type, exc.key
    if key is None:  # a whole section of the wrong kind (``budget: 3``)
        owner, key = schema, top
    if isinstance(owner, type) and dataclasses.is_dataclass(owner):
        spec = {f.name: f for f in dataclasses.fields(owner)}.get(str(key))
        if spec is not None and spec.metadata.get("expect"):
            return str(spec.metadata["expect"])
        return _describe(typing.get_type_hints(owner).get(str(key)))
    # a value inside a map or list of a dataclass field: that field's words for its values
    parent = full_key[: -len(str(key))].rstrip(".[") if key is not None else ""
    spec = {f.name: f for f in dataclasses.fields(schema)}.get(parent)
    if spec is not None and spec.metadata.get("each"):
        return str(spec.metadata["each"])
    args = typing.get_args(getattr(exc, "ref_type", None))
    return _describe(args[-1]) if args else None  # Dict[str, X] / List[X]: X


def _describe(hint: Any) -> str | None:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        inner = _describe(next(a for a in args if a is not type(None)))
        return None if inner is None else f"{inner} or null"
    origin = typing.get_origin(hint) or hint
    if origin is list:
        return "a list"
    if origin is dict or dataclasses.is_dataclass(origin):
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(origin)


_MISSING = object()


def _locate(data: Any, full_key: str) -> tuple[Any, str]:
    """The raw value at an OmegaConf key path (``search.optimizer.lr.low``, ``base[2]``), and the path as
    the user reads it (``where['strategy=partial']``); dotted keys make it ambiguous: the longest wins."""
    node, rest, shown = data, full_key, ""
    while rest:
        if rest.startswith("[") and isinstance(node, list):
            index, _, rest = rest[1:].partition("]")
            if not index.isdigit() or int(index) >= len(node):
                return _MISSING, full_key
            node, shown = node[int(index)], f"{shown}[{index}]"
        elif isinstance(node, Mapping):
            keys = sorted((str(k) for k in node), key=len, reverse=True)
            match = next((k for k in keys if rest == k or rest.startswith((f"{k}.", f"{k}["))), None)
            if match is None:
                return _MISSING, full_key
            node = next(v for k, v in node.items() if str(k) == match)
            rest = rest[len(match) :]
            plain = not any(c in match for c in "=,'[] ")
            shown = f"{shown}['{match}']" if shown and not plain else f"{shown}.{match}" if shown else match
        else:
            return _MISSING, full_key
        rest = rest.removeprefix(".")
    return node, shown
