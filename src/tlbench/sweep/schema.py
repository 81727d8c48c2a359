"""The typed schema of a sweep file: which keys exist and what type each value has.

A sweep file (``sweeps/<name>.yaml``), every section optional::

    description: one paragraph (its first sentence is what `tlbench sweep --help` lists)
    mode: tune_then_final           # or pareto (one multi-objective study, no finals)
    base: [data=digits, trainer.min_steps=100, ...]      # Hydra overrides of every trial
    factors: {strategy: [linear_probe, full_finetune], data.n_per_class: [5, 20, null]}  # crossed: cells
    where: {strategy=partial: [strategy.freeze_depth=4]} # extra overrides of the cells a condition matches
    search: {optimizer.lr: {low: 1.0e-4, high: 1.0e-2, log: true}}   # tuned in every cell
    search_where: {strategy=linear_probe: {strategy.probe.l2: {low: 1.0e-6, high: 1.0, log: true}}}
    budget:
      trials_per_cell: 3            # tuning trials per arm, the same for every arm that trains
      max_retries: 2                # crashes redone per cell / slot
      tune_at: largest              # tune one data size only (largest | smallest | a size); the
                                    # other sizes run their counterpart's choice
      check: {factor: 2, size: largest, strategies: [full_finetune]}   # after tuning: each arm's
                                    # choice re-run with factor x its step budget (validation only)
    final:
      seeds: [1, 2, 3]              # the first round: every arm of a data size, paired
      race: {cap: 8, round: 2}      # then `round` new seeds per round for undecided arms, up to
                                    # `cap` seeds per arm; credibly worse arms retired (sweep.race)
    screen: {keep: 2, score: logme} # rank the backbone factor without training first; train the top
                                    # `keep` (score: logme | knn_loo | knn | probe_cv)
    tune_seed: 0
    sampler: {name: qmc, seed: 0}   # tpe | random | qmc | grid | nsgaii
    pruner: {name: successive_halving, min_resource: 3, reduction_factor: 3}
    report: true                    # build the report when the study completes
    export: true                    # then export the winner (default: true with finals)

The YAML mapping is merged into ``OmegaConf.structured(SweepFileSchema)``, so an unknown key or a
value of the wrong type fails there; this module turns OmegaConf's error into one line naming the
key path, what was expected, what was found and, for a misspelt key, the key that was probably
meant. Value rules (ranges, allowed names) and cross-field rules are checked by :mod:`.loader`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, GrammarParseError, OmegaConfBaseException

from tlbench.errors import ConfigError
from tlbench.sweep.spec import sweep_error


def _words(expect: str, each: str | None = None) -> dict[str, str | None]:
    """Field metadata: how errors describe the value (``expect``) and, for a map, each of its values."""
    return {"expect": expect, "each": each}


RANGE = "a mapping with low and high (or choices: [...])"
OVERRIDES = "a list of Hydra overrides like 'trainer.epochs=4'"


@dataclass
class SearchParamSchema:
    low: float | None = field(default=None, metadata=_words("a number"))
    high: float | None = field(default=None, metadata=_words("a number"))
    log: bool = field(default=False, metadata=_words("true or false"))
    step: Any = None  # a number, kept as written (an int stays an int: the spec is digested for resume)
    type: str = field(default="float", metadata=_words("float or int"))
    choices: list[Any] | None = field(default=None, metadata=_words("a non-empty list"))


@dataclass
class SearchTableSchema:
    params: dict[str, SearchParamSchema] = field(
        default_factory=dict, metadata=_words("a mapping of searched paths", RANGE)
    )


@dataclass
class BudgetCheckSchema:
    factor: int = field(default=2, metadata=_words("an integer >= 2"))
    size: Any = "largest"  # largest | smallest | a data size (checked by the loader)
    strategies: list[str] = field(default_factory=list, metadata=_words("a list of strategy names"))


@dataclass
class BudgetSchema:
    trials_per_cell: int = field(default=1, metadata=_words("an integer >= 0"))
    max_retries: int = field(default=2, metadata=_words("an integer >= 0"))
    check: BudgetCheckSchema | None = field(
        default=None, metadata=_words("a mapping like {factor: 2, size: largest}")
    )
    tune_at: Any = None  # largest | smallest | a data size (checked by the loader)


@dataclass
class RaceSchema:
    cap: int = field(default=8, metadata=_words("an integer: the most seeds an arm gets"))
    round: int = field(default=2, metadata=_words("an integer >= 1: seeds added per round"))


@dataclass
class FinalSchema:
    seeds: list[int] = field(default_factory=list, metadata=_words("a list of integers >= 0"))
    race: RaceSchema | None = field(default=None, metadata=_words("a mapping like {cap: 8, round: 2}"))


@dataclass
class SamplerSchema:
    name: str | None = field(default=None, metadata=_words("a sampler name"))  # default: by the mode
    seed: int = field(default=0, metadata=_words("an integer >= 0"))
    n_startup_trials: int | None = field(default=None, metadata=_words("an integer >= 0"))


@dataclass
class PrunerSchema:
    name: str = field(default="none", metadata=_words("a pruner name"))
    min_resource: int = field(default=1, metadata=_words("an integer >= 1"))
    reduction_factor: int = field(default=3, metadata=_words("an integer >= 2"))
    n_warmup_steps: int = field(default=1, metadata=_words("an integer >= 0"))


@dataclass
class ScreenSchema:
    keep: int = field(default=1, metadata=_words("an integer >= 1: backbones trained"))
    score: str = field(default="logme", metadata=_words("logme, knn_loo, knn or probe_cv"))


@dataclass
class SweepFileSchema:
    description: str = field(default="", metadata=_words("a string"))
    mode: str = field(default="tune_then_final", metadata=_words("a mode name"))
    base: list[Any] = field(default_factory=list, metadata=_words(OVERRIDES))  # each checked by the loader
    factors: dict[str, list[Any]] = field(
        default_factory=dict,
        metadata=_words("a mapping of config paths to values", "a non-empty list of values"),
    )
    where: dict[str, list[Any] | None] = field(
        default_factory=dict, metadata=_words("a mapping of conditions to overrides", OVERRIDES)
    )
    search: dict[str, SearchParamSchema] = field(
        default_factory=dict, metadata=_words("a mapping of searched paths", RANGE)
    )
    # condition -> search table; each table is typed on its own (OmegaConf does not check the
    # values of a dict of dicts of dataclasses)
    search_where: dict[str, Any] = field(
        default_factory=dict,
        metadata=_words("a mapping of conditions to search tables", "a mapping of searched paths"),
    )
    budget: BudgetSchema = field(
        default_factory=BudgetSchema, metadata=_words("a mapping (trials_per_cell, max_retries, ...)")
    )
    final: FinalSchema = field(
        default_factory=FinalSchema,
        metadata=_words("a mapping like {seeds: [1, 2, 3], race: {cap: 8, round: 2}}"),
    )
    tune_seed: int = field(default=0, metadata=_words("an integer >= 0"))
    sampler: SamplerSchema = field(
        default_factory=SamplerSchema, metadata=_words("a mapping like {name: tpe, seed: 0}")
    )
    pruner: PrunerSchema = field(
        default_factory=PrunerSchema, metadata=_words("a mapping like {name: median}")
    )
    report: bool = field(default=False, metadata=_words("true or false"))
    export: bool | None = field(default=None, metadata=_words("true or false"))
    screen: ScreenSchema | None = field(
        default=None, metadata=_words("a mapping like {keep: 2, score: logme}")
    )


# Sections left empty in YAML (``where:``) mean their default, as an absent one does.
_EMPTY_MEANS_DEFAULT = (
    "description", "base", "factors", "where", "search", "search_where", "budget", "final",
    "sampler", "pruner",
)  # fmt: skip


def typed_sweep(data: Any, *, name: str) -> dict[str, Any]:
    """The sweep file's mapping with every key known and every value of its declared type."""
    if not isinstance(data, Mapping):
        raise sweep_error(name, f"the sweep file must be a mapping of sections, got {type(data).__name__}")
    plain = {k: v for k, v in data.items() if not (v is None and k in _EMPTY_MEANS_DEFAULT)}
    typed = _merge(SweepFileSchema, plain, name=name)
    typed["search_where"] = {
        cond: _search_table(table, name=name, where=f"search_where['{cond}']")
        for cond, table in typed["search_where"].items()
    }
    return typed


def _search_table(table: Any, *, name: str, where: str) -> dict[str, Any]:
    return _merge(SearchTableSchema, {"params": table or {}}, name=name, prefix=where)["params"]


def _merge(schema: type, data: Mapping[str, Any], *, name: str, prefix: str = "") -> dict[str, Any]:
    """``data`` merged into the schema one top-level key at a time (so a failing key is always known)."""
    config = OmegaConf.structured(schema)
    for key, value in data.items():
        try:
            config = OmegaConf.merge(config, {key: value})
        except OmegaConfBaseException as exc:
            raise _explain(exc, schema, key, value, name=name, prefix=prefix) from None
    plain = OmegaConf.to_container(config, resolve=False)  # overrides keep their ${...} as written
    assert isinstance(plain, dict)
    return {str(k): v for k, v in plain.items()}


def _explain(
    exc: OmegaConfBaseException, schema: type, top: Any, value: Any, *, name: str, prefix: str
) -> ConfigError:
    full_key = str(exc.full_key or top)
    found, path = _locate({top: value}, full_key)
    path = prefix + path.removeprefix("params") if prefix else path
    if isinstance(exc, ConfigKeyError) and dataclasses.is_dataclass(exc.object_type):
        allowed = [f.name for f in dataclasses.fields(exc.object_type)]
        parent = path[: -len(str(exc.key))].rstrip(".") or "the sweep file"
        close = difflib.get_close_matches(str(exc.key), allowed, n=1)
        hint = f" — did you mean '{close[0]}'?" if close else f" (allowed: {', '.join(allowed)})"
        return sweep_error(name, f"unknown key '{exc.key}' in {parent}{hint}")
    got = "" if found is _MISSING else f", got {found!r}"
    if isinstance(exc, GrammarParseError):
        shown = "" if found is _MISSING else f" ({found!r})"
        return sweep_error(name, f"{path}{shown} is not a valid ${{...}} interpolation: {_first_line(exc)}")
    expected = _expected(exc, schema, top, full_key)
    if expected is None:
        return sweep_error(name, f"{path}: {_first_line(exc)}{got}")
    return sweep_error(name, f"{path} must be {expected}{got}")


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
    """The raw value at an OmegaConf key path (``search.optimizer.lr.low``, ``base[2]``), and the
    path as the user reads it: conditions in brackets (``where['strategy=partial']``).

    Dotted keys (``optimizer.lr``) make OmegaConf's path ambiguous; at each mapping the longest key
    that matches is taken.
    """
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
