"""The typed sweep definition (``sweeps/<name>.yaml``) and its structural validation.

A sweep file is parsed once, up front, into frozen dataclasses: unknown keys and wrong types
(:mod:`tlbench.sweep.schema`), bad ranges, empty factor lists and impossible combinations fail with
one actionable line, before any study is created. Whether factor and search paths exist in the
run config is checked separately, by composing configs (:mod:`tlbench.sweep.check`), because only
Hydra knows the config tree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tlbench.errors import ConfigError

MODES = ("tune_then_final", "pareto")
SIZE_FACTOR = "data.n_per_class"  # the data size: what racing pairs arms within, what a check picks
AUTO_SIZES = "auto"  # data.n_per_class: [auto]: sizes derived from the data at run time (photos.yaml)
SIZE_WORDS = ("largest", "smallest")  # a data size named by its rank (null, i.e. all, is the largest)
SAMPLERS = ("tpe", "random", "qmc", "grid", "nsgaii")
PRUNERS = ("none", "successive_halving", "hyperband", "median")
Scalar = str | int | float | bool | None
_PLAIN = re.compile(r"^[\w.\-/:+]+$")  # values that need no quoting in a Hydra override


@dataclass(frozen=True)
class SearchParam:
    """One tuned hyper-parameter: a float/int range (``log`` for log-uniform) or a list of choices."""

    path: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False
    choices: tuple[Scalar, ...] | None = None


@dataclass(frozen=True)
class Condition:
    """``"strategy=partial,data.n_per_class=5"``: matches cells whose factors have all these values."""

    text: str
    items: tuple[tuple[str, Scalar], ...]


@dataclass(frozen=True)
class BudgetCheck:
    """``budget.check``: after tuning, re-run each arm's chosen configuration at one data size with
    ``factor`` x its step budget on the tuning seed (validation only), to show it was trained enough."""

    factor: int = 2
    size: Scalar = "largest"  # largest | smallest | one of the data.n_per_class values
    strategies: tuple[str, ...] = ()  # the sample of arms checked (default: every arm trained by steps)


@dataclass(frozen=True)
class Budget:
    trials_per_cell: int = 1  # counted tuning trials per cell (equal for every cell: the fair protocol)
    max_retries: int = 2  # crashes (not divergence) redone per cell / final slot before giving up
    check: BudgetCheck | None = None
    # tune only the cells of this data size (largest | smallest | a size); the others run the choice
    # of their counterpart there (same other factors). None: every cell is tuned.
    tune_at: Scalar = None


@dataclass(frozen=True)
class Race:
    """``final.race``: final seeds in rounds; after ``final.seeds`` (round 1), ``round`` more seeds per
    round for the arms whose verdict is undecided, up to ``cap`` seeds per arm (:mod:`tlbench.sweep.race`)."""

    cap: int = 8
    round: int = 2


SCREEN_SCORES = {"logme": "logme", "knn_loo": "knn_loo_acc", "knn": "knn_acc", "probe_cv": "probe_cv_acc"}


@dataclass(frozen=True)
class ScreenSpec:
    """``screen``: rank the ``backbone`` factor's values without training (the study's first phase) and
    train only the top ``keep`` by ``score`` (:mod:`tlbench.sweep.screen_phase`)."""

    keep: int
    score: str = "logme"  # a ScreenResult score name: logme | knn_loo_acc | knn_acc | probe_cv_acc


@dataclass(frozen=True)
class SamplerSpec:
    name: str = "tpe"
    seed: int = 0
    n_startup_trials: int | None = None  # tpe: random trials before the model kicks in


@dataclass(frozen=True)
class PrunerSpec:
    name: str = "none"
    min_resource: int = 1  # first rung: epochs, or 1/val_checks of a step budget (see sweep.pruning)
    reduction_factor: int = 3
    n_warmup_steps: int = 1  # median


@dataclass(frozen=True)
class SweepSpec:
    name: str
    description: str = ""
    mode: str = "tune_then_final"
    base: tuple[str, ...] = ()
    factors: tuple[tuple[str, tuple[Scalar, ...]], ...] = ()
    where: tuple[tuple[Condition, tuple[str, ...]], ...] = ()
    search: tuple[SearchParam, ...] = ()
    search_where: tuple[tuple[Condition, tuple[SearchParam, ...]], ...] = ()
    budget: Budget = field(default_factory=Budget)
    final_seeds: tuple[int, ...] = ()
    race: Race | None = None  # racing finals (None: every arm runs every final seed)
    tune_seed: int = 0
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    pruner: PrunerSpec = field(default_factory=PrunerSpec)
    report: bool = False  # build the report when the study completes
    export: bool | None = None  # export the winner when complete (None: yes for tune-then-final with finals)
    screen: ScreenSpec | None = None  # the backbone screen as the study's first phase
    overrides: tuple[str, ...] = ()  # from the command line (ARGS, --data), after base
    source: str = ""  # the file it was read from (for error messages; not part of the definition)

    @property
    def factor_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.factors)

    @property
    def has_finals(self) -> bool:
        return bool(self.final_seeds) and self.mode == "tune_then_final"

    @property
    def exports(self) -> bool:
        """Whether a complete study ends by exporting its recommended arm as a registered model."""
        return self.has_finals if self.export is None else self.export and self.has_finals


def size_order(value: Scalar) -> float:
    """Data sizes in increasing order; null (the whole training pool) is the largest."""
    if value is None:
        return float("inf")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"a data size must be a number or null, got {value!r}")
    return float(value)


def pick_size(which: Scalar, sizes: tuple[Scalar, ...]) -> Scalar:
    """``largest`` / ``smallest`` of ``sizes``, or ``which`` itself (a size the loader checked)."""
    if which == "largest":
        return max(sizes, key=size_order)
    if which == "smallest":
        return min(sizes, key=size_order)
    return which


def sweep_error(name: str, message: str) -> ConfigError:
    return ConfigError(f"sweep '{name}': {message}")


def as_overrides(name: str, where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
        raise sweep_error(
            name, f"{where} must be a list of Hydra overrides like 'trainer.epochs=4', got {value!r}"
        )
    return tuple(value)


def at_least(name: str, where: str, value: int, minimum: int) -> int:
    if value < minimum:
        raise sweep_error(name, f"{where} must be an integer >= {minimum}, got {value!r}")
    return value


def parse_condition(name: str, text: Any, factors: Mapping[str, tuple[Scalar, ...]]) -> Condition:
    """``"k=v,k2=v2"`` over declared factors; each value must be one of the factor's values."""
    if not isinstance(text, str) or "=" not in text:
        raise sweep_error(
            name, f"condition {text!r} must look like 'strategy=partial' (a factor=value, comma-joined)"
        )
    items: list[tuple[str, Scalar]] = []
    for part in text.split(","):
        key, _, raw = part.strip().partition("=")
        if key not in factors:
            raise sweep_error(
                name, f"condition '{text}' names '{key}', which is not a factor ({', '.join(factors)})"
            )
        match = [v for v in factors[key] if format_value(v) == raw.strip() or _same_number(v, raw.strip())]
        if not match:
            values = ", ".join(str(v) for v in factors[key])
            raise sweep_error(
                name, f"condition '{text}': {key}={raw} is not one of the factor's values ({values})"
            )
        items.append((key, match[0]))
    return Condition(text=text, items=tuple(items))


def format_value(value: Scalar) -> str:
    """A value as Hydra reads it back unchanged (and as it appears in cell keys)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if isinstance(value, int) or _PLAIN.match(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _same_number(value: Scalar, raw: str) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return float(raw) == float(value)
    except ValueError:
        return False


def parse_search(name: str, where: str, table: Mapping[str, Mapping[str, Any]]) -> tuple[SearchParam, ...]:
    """Search parameters from a typed table (:class:`~tlbench.sweep.schema.SearchParamSchema` values)."""
    params = []
    for path, spec in table.items():
        spot = f"{where}.{path}"
        choices = spec["choices"]
        if choices is None:
            params.append(_parse_range(name, spot, str(path), spec))
            continue
        ranged = any(spec[k] is not None for k in ("low", "high", "step")) or spec["log"]
        if ranged or spec["type"] != "float":
            raise sweep_error(name, f"{spot}: give either choices or low/high, not both")
        if not choices:
            raise sweep_error(name, f"{spot}.choices must be a non-empty list, got {choices!r}")
        params.append(SearchParam(path=str(path), choices=tuple(choices)))
    return tuple(params)


def _parse_range(name: str, spot: str, path: str, spec: Mapping[str, Any]) -> SearchParam:
    low, high, kind, log, step = spec["low"], spec["high"], spec["type"], spec["log"], spec["step"]
    if low is None or high is None:
        raise sweep_error(name, f"{spot} needs low and high (or choices: [...])")
    if kind not in ("float", "int"):
        raise sweep_error(name, f"{spot}.type must be float or int, got {kind!r}")
    if low >= high:
        raise sweep_error(name, f"{spot}: low must be < high, got low={low} high={high}")
    if log and low <= 0:
        raise sweep_error(name, f"{spot}: a log range needs low > 0, got low={low}")
    number = isinstance(step, (int, float)) and not isinstance(step, bool)
    if step is not None and (log or not number or step <= 0):
        raise sweep_error(name, f"{spot}.step must be a positive number and cannot be combined with log")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise sweep_error(name, f"{spot}: an int range needs integer low/high, got {low}, {high}")
    return SearchParam(path=path, low=float(low), high=float(high), log=log, step=step, integer=kind == "int")


def parse_factors(name: str, table: Mapping[str, list[Any]]) -> tuple[tuple[str, tuple[Scalar, ...]], ...]:
    factors = []
    for path, values in table.items():
        if not values:
            raise sweep_error(name, f"factor '{path}' needs a non-empty list of values, got {values!r}")
        if any(isinstance(v, (list, dict)) for v in values):
            raise sweep_error(name, f"factor '{path}': values must be scalars, got {values!r}")
        if len({str(v) for v in values}) != len(values):
            raise sweep_error(name, f"factor '{path}' lists a value twice: {values!r}")
        factors.append((str(path), tuple(values)))
    return tuple(factors)
