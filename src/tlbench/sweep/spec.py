"""The sweep file (``sweeps/<name>.yaml``): one typed family of dataclasses for it, loading, validation,
errors, and what the command line adds (overrides, a photo folder, data sizes).

A sweep file is merged into its schema (:class:`SweepFile`, whose sections are the very dataclasses the
resolved :class:`SweepSpec` holds) by :func:`tlbench.config.compose.typed_mapping`: an unknown key or a
wrong type is one line naming the key path. Value and cross-field rules are checked once, by
:func:`parse_sweep`; whether paths exist in the run config, by composing (plan.check_against_config).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from tlbench.config.compose import packaged_dir, typed_mapping
from tlbench.errors import ConfigError
from tlbench.strategies import STRATEGIES

MODES = ("tune_then_final", "pareto")
SIZE_FACTOR = "data.n_per_class"  # the data size: what racing pairs arms within, what a check picks
AUTO_SIZES = "auto"  # data.n_per_class: [auto]: sizes derived from the data at run time (photos.yaml)
SIZE_WORDS = ("largest", "smallest")  # a data size named by its rank (null, i.e. all, is the largest)
SAMPLERS = ("tpe", "random", "qmc", "grid", "nsgaii")
PRUNERS = ("none", "successive_halving", "hyperband", "median")
SCREEN_SCORES = {"logme": "logme", "knn_loo": "knn_loo_acc", "knn": "knn_acc", "probe_cv": "probe_cv_acc"}
Scalar = str | int | float | bool | None
_PLAIN = re.compile(r"^[\w.\-/:+]+$")  # values that need no quoting in a Hydra override
RANGE = "a mapping with low and high (or choices: [...])"
OVERRIDES = "a list of Hydra overrides like 'trainer.epochs=4'"


# --- the sweep file's sections ---
# Not frozen: OmegaConf makes a frozen dataclass's nodes read-only, and the file is merged into them.
# Field metadata: how errors describe a value ("expect"), each value of a map ("each"), and the
# smallest integer allowed ("min", checked by parse_sweep).
def _words(expect: str, each: str | None = None) -> dict[str, Any]:
    return {"expect": expect, "each": each}


def _int(default: int | None, minimum: int, what: str = "") -> Any:
    return field(default=default, metadata={"expect": f"an integer >= {minimum}{what}", "min": minimum})


@dataclass
class SearchParam:
    """One tuned hyper-parameter: a float/int range (``log`` for log-uniform) or a list of choices."""

    path: str = ""  # the config path: the key it is listed under
    low: float | None = field(default=None, metadata=_words("a number"))
    high: float | None = field(default=None, metadata=_words("a number"))
    log: bool = field(default=False, metadata=_words("true or false"))
    step: Any = None  # a number, kept as written (an int stays an int: the spec is digested for resume)
    type: str = field(default="float", metadata=_words("float or int"))
    choices: tuple[Any, ...] | None = field(default=None, metadata=_words("a non-empty list"))

    @property
    def integer(self) -> bool:
        return self.type == "int"


@dataclass
class SearchTable:  # a search_where table, typed on its own (OmegaConf does not check a dict of dicts)
    params: dict[str, SearchParam] = field(
        default_factory=dict, metadata=_words("a mapping of searched paths", RANGE)
    )


@dataclass
class BudgetCheck:
    """``budget.check``: after tuning, re-run each arm's chosen configuration at one data size with
    ``factor`` x its step budget on the tuning seed (validation only), to show it was trained enough."""

    factor: int = _int(2, 2)
    size: Any = "largest"  # largest | smallest | one of the data.n_per_class values
    strategies: list[str] = field(default_factory=list, metadata=_words("a list of strategy names"))


@dataclass
class Budget:
    trials_per_cell: int = _int(1, 0)  # counted tuning trials per cell, equal for every cell (pareto: >= 1)
    max_retries: int = _int(2, 0)  # crashes (not divergence) redone per cell / final slot before giving up
    check: BudgetCheck | None = field(
        default=None, metadata=_words("a mapping like {factor: 2, size: largest}")
    )
    # tune only the cells of this data size (largest | smallest | a size); the others run the choice
    # of their counterpart there (same other factors). None: every cell is tuned.
    tune_at: Any = None


@dataclass
class Race:
    """``final.race``: final seeds in rounds; after ``final.seeds`` (round 1), ``round`` more seeds per
    round for the arms whose verdict is undecided, up to ``cap`` seeds per arm (:mod:`tlbench.sweep.race`)."""

    cap: int = field(default=8, metadata=_words("an integer: the most seeds an arm gets"))
    round: int = _int(2, 1, ": seeds added per round")


@dataclass
class Final:
    seeds: list[int] = field(default_factory=list, metadata=_words("a list of integers >= 0"))
    race: Race | None = field(default=None, metadata=_words("a mapping like {cap: 8, round: 2}"))


@dataclass
class ScreenSpec:
    """``screen``: rank the ``backbone`` factor's values without training (the study's first phase) and
    train only the top ``keep`` by ``score`` (:mod:`tlbench.sweep.screen_phase`)."""

    keep: int = _int(1, 1, ": backbones trained")
    score: str = field(default="logme", metadata=_words("logme, knn_loo, knn or probe_cv"))  # resolved:
    # a ScreenResult score name (logme | knn_loo_acc | knn_acc | probe_cv_acc)


@dataclass
class SamplerSpec:
    name: str | None = field(default=None, metadata=_words("a sampler name"))  # None: by the mode
    seed: int = _int(0, 0)
    n_startup_trials: int | None = _int(None, 0)  # tpe: random trials before the model kicks in


@dataclass
class PrunerSpec:
    name: str = field(default="none", metadata=_words("a pruner name"))
    min_resource: int = _int(1, 1)  # first rung: epochs, or 1/val_checks of a step budget (OptunaPruning)
    reduction_factor: int = _int(3, 2)
    n_warmup_steps: int = _int(1, 0)  # median


@dataclass
class SweepFile:
    """A sweep file as written, every section optional::

    description: one paragraph (its first sentence is what `tlbench sweep --help` lists)
    mode: tune_then_final           # or pareto (one multi-objective study, no finals)
    base: [data=digits, trainer.min_steps=100, ...]      # Hydra overrides of every trial
    factors: {strategy: [linear_probe, full_finetune], data.n_per_class: [5, 20, null]}  # crossed
    where: {strategy=partial: [strategy.freeze_depth=4]} # extra overrides of the matching cells
    search: {optimizer.lr: {low: 1.0e-4, high: 1.0e-2, log: true}}   # tuned in every cell
    search_where: {strategy=linear_probe: {strategy.probe.l2: {low: 1.0e-6, high: 1.0, log: true}}}
    budget: {trials_per_cell: 3, max_retries: 2, tune_at: largest,
             check: {factor: 2, size: largest, strategies: [full_finetune]}}
    final: {seeds: [1, 2, 3], race: {cap: 8, round: 2}}
    screen: {keep: 2, score: logme} # rank the backbone factor without training; train the top keep
    tune_seed: 0
    sampler: {name: qmc, seed: 0}   # tpe | random | qmc | grid | nsgaii
    pruner: {name: successive_halving, min_resource: 3, reduction_factor: 3}
    report: true                    # build the report when the study completes
    export: true                    # then export the winner (default: true with finals)
    """

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
    search: dict[str, SearchParam] = field(
        default_factory=dict, metadata=_words("a mapping of searched paths", RANGE)
    )
    search_where: dict[str, Any] = field(  # condition -> a SearchTable
        default_factory=dict,
        metadata=_words("a mapping of conditions to search tables", "a mapping of searched paths"),
    )
    budget: Budget = field(
        default_factory=Budget, metadata=_words("a mapping (trials_per_cell, max_retries, ...)")
    )
    final: Final = field(
        default_factory=Final, metadata=_words("a mapping like {seeds: [1, 2, 3], race: {cap: 8, round: 2}}")
    )
    tune_seed: int = _int(0, 0)
    sampler: SamplerSpec = field(
        default_factory=SamplerSpec, metadata=_words("a mapping like {name: tpe, seed: 0}")
    )
    pruner: PrunerSpec = field(default_factory=PrunerSpec, metadata=_words("a mapping like {name: median}"))
    report: bool = field(default=False, metadata=_words("true or false"))
    export: bool | None = field(default=None, metadata=_words("true or false"))
    screen: ScreenSpec | None = field(default=None, metadata=_words("a mapping like {keep: 2, score: logme}"))


# --- the resolved spec ---
@dataclass(frozen=True)
class Condition:
    """``"strategy=partial,data.n_per_class=5"``: matches cells whose factors have all these values."""

    text: str
    items: tuple[tuple[str, Scalar], ...]


@dataclass(frozen=True)
class SweepSpec:
    """The sweep file's sections resolved (conditions parsed, defaults by mode), plus the command line's."""

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
    if which in SIZE_WORDS:
        return (max if which == "largest" else min)(sizes, key=size_order)
    return which


def sweep_error(name: str, message: str) -> ConfigError:
    return ConfigError(f"sweep '{name}': {message}")


def as_overrides(name: str, where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
        raise sweep_error(name, f"{where} must be {OVERRIDES}, got {value!r}")
    return tuple(value)


def at_least(name: str, where: str, value: int, minimum: int) -> int:
    if value < minimum:
        raise sweep_error(name, f"{where} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_minimums(name: str, section: Any, prefix: str) -> None:
    """Every integer field with a ``min`` in its metadata, in this section and those below it."""
    for spec in fields(section):
        value, where = getattr(section, spec.name), f"{prefix}{spec.name}"
        if is_dataclass(value):
            _check_minimums(name, value, f"{where}.")
        elif value is not None and "min" in spec.metadata:
            at_least(name, where, value, spec.metadata["min"])


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


def override(path: str, value: Scalar) -> str:
    return f"{path}={format_value(value)}"


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
    """Search parameters from a typed table (:class:`SearchParam` fields), each range or choices checked."""
    params = []
    for path, raw in table.items():
        spot, param = f"{where}.{path}", SearchParam(**{**raw, "path": str(path)})
        low, high, step, choices = param.low, param.high, param.step, param.choices
        if choices is not None:
            if any(v is not None for v in (low, high, step)) or param.log or param.type != "float":
                raise sweep_error(name, f"{spot}: give either choices or low/high, not both")
            if not choices:
                raise sweep_error(name, f"{spot}.choices must be a non-empty list, got {choices!r}")
            params.append(replace(param, choices=tuple(choices)))
            continue
        if low is None or high is None:
            raise sweep_error(name, f"{spot} needs low and high (or choices: [...])")
        if param.type not in ("float", "int"):
            raise sweep_error(name, f"{spot}.type must be float or int, got {param.type!r}")
        if low >= high:
            raise sweep_error(name, f"{spot}: low must be < high, got low={low} high={high}")
        if param.log and low <= 0:
            raise sweep_error(name, f"{spot}: a log range needs low > 0, got low={low}")
        number = isinstance(step, (int, float)) and not isinstance(step, bool)
        if step is not None and (param.log or not number or step <= 0):
            raise sweep_error(name, f"{spot}.step must be a positive number and cannot be combined with log")
        if param.integer and not (float(low).is_integer() and float(high).is_integer()):
            raise sweep_error(name, f"{spot}: an int range needs integer low/high, got {low}, {high}")
        params.append(replace(param, low=float(low), high=float(high)))
    return tuple(params)


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
    typed = _typed(SweepFile, plain, name=name)
    typed["search_where"] = {
        cond: _typed(SearchTable, {"params": table or {}}, name=name, prefix=f"search_where['{cond}']")[
            "params"
        ]
        for cond, table in typed["search_where"].items()
    }
    return typed


def _typed(schema: type, data: Mapping[str, Any], *, name: str, prefix: str = "") -> dict[str, Any]:
    try:
        return typed_mapping(schema, data, prefix=prefix, root="the sweep file")
    except ConfigError as exc:
        raise sweep_error(name, str(exc)) from None


# --- loader ---
SWEEPS_DIR_ENV = "TLBENCH_SWEEPS_DIR"


def sweeps_dir() -> Path:
    """``$TLBENCH_SWEEPS_DIR``, else the ``sweeps/`` shipped in the package."""
    override = os.environ.get(SWEEPS_DIR_ENV)
    return Path(override) if override else packaged_dir("sweeps", env=SWEEPS_DIR_ENV)


def sweep_path(name_or_path: str) -> Path:
    """A sweep name (``smoke``) or a path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    path = sweeps_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in sweeps_dir().glob("*.yaml"))
        raise ConfigError(f"no sweep '{name_or_path}': expected {path}; known sweeps: {', '.join(known)}")
    return path


def load_sweep(name_or_path: str) -> SweepSpec:
    path = sweep_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"sweep file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    try:
        return replace(parse_sweep(data or {}, name=path.stem), source=str(path))
    except ConfigError as exc:
        raise ConfigError(f"{exc} (in {path})") from None


def parse_sweep(data: Mapping[str, Any], *, name: str) -> SweepSpec:
    """A validated :class:`SweepSpec` from the YAML mapping: keys and types by the schema
    (:func:`typed_sweep`), values and combinations here (paths: :mod:`tlbench.sweep.plan`)."""
    raw = typed_sweep(data, name=name)
    mode = raw["mode"]
    if mode not in MODES:
        raise sweep_error(name, f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    factors = parse_factors(name, raw["factors"])
    by_name = dict(factors)
    where = tuple(
        (parse_condition(name, cond, by_name), as_overrides(name, f"where['{cond}']", overrides))
        for cond, overrides in raw["where"].items()
    )
    search_where = tuple(
        (parse_condition(name, cond, by_name), parse_search(name, f"search_where['{cond}']", params))
        for cond, params in raw["search_where"].items()
    )
    budget, final = raw["budget"], raw["final"]
    check = budget["check"] and BudgetCheck(**budget["check"])
    if check and isinstance(check.size, (list, dict)):
        raise sweep_error(
            name, f"budget.check.size must be largest, smallest or a data size, got {check.size!r}"
        )
    seeds = tuple(final["seeds"])
    if any(s < 0 for s in seeds):
        raise sweep_error(name, f"final.seeds must be a list of integers >= 0, got {list(seeds)!r}")
    if len(set(seeds)) != len(seeds):
        raise sweep_error(name, f"final.seeds lists a seed twice: {list(seeds)}")
    race = final["race"] and Race(**final["race"])
    if race and len(seeds) < 2:
        raise sweep_error(
            name, "final.race needs at least 2 final.seeds (a paired interval needs 2 seeds per arm)"
        )
    sampler = SamplerSpec(**raw["sampler"])
    screen = raw["screen"] and ScreenSpec(**raw["screen"])
    if screen and screen.score not in [*SCREEN_SCORES, *SCREEN_SCORES.values()]:
        raise sweep_error(
            name, f"screen.score must be one of {', '.join(SCREEN_SCORES)}, got {screen.score!r}"
        )
    spec = SweepSpec(
        name=name,
        description=raw["description"],
        mode=mode,
        base=as_overrides(name, "base", raw["base"]),
        factors=factors,
        where=where,
        search=parse_search(name, "search", raw["search"]),
        search_where=search_where,
        budget=Budget(**{**budget, "check": check or None}),
        final_seeds=seeds,
        race=race or None,
        tune_seed=raw["tune_seed"],
        sampler=replace(sampler, name=sampler.name or ("nsgaii" if mode == "pareto" else "tpe")),
        pruner=PrunerSpec(**raw["pruner"]),
        report=raw["report"],
        export=raw["export"],
        screen=(screen and replace(screen, score=SCREEN_SCORES.get(screen.score, screen.score))) or None,
    )
    _check_values(spec)
    _check_combinations(spec)
    return spec


def _check_values(spec: SweepSpec) -> None:
    """The integer minimums of the field metadata, and the value rules that depend on another value."""
    name = spec.name
    sections = {"budget": spec.budget, "final.race": spec.race, "sampler": spec.sampler}
    for prefix, section in {**sections, "pruner": spec.pruner, "screen": spec.screen}.items():
        if section is not None:
            _check_minimums(name, section, f"{prefix}.")
    at_least(name, "tune_seed", spec.tune_seed, 0)
    if spec.mode == "pareto":
        at_least(name, "budget.trials_per_cell", spec.budget.trials_per_cell, 1)
    if spec.race is not None:
        at_least(name, "final.race.cap", spec.race.cap, len(spec.final_seeds))
    for key, value, allowed in (
        ("sampler", spec.sampler.name, SAMPLERS),
        ("pruner", spec.pruner.name, PRUNERS),
    ):
        if value not in allowed:
            raise sweep_error(name, f"{key}.name must be one of {', '.join(allowed)}, got {value!r}")


def _check_combinations(spec: SweepSpec) -> None:
    name, factors = spec.name, spec.factor_names
    searched = {p.path for p in spec.search} | {p.path for _, ps in spec.search_where for p in ps}
    for path in sorted(searched & set(factors)):
        raise sweep_error(name, f"'{path}' is both a factor and searched: cross it or tune it, not both")
    if "seed" in searched:
        raise sweep_error(name, "seed cannot be searched: use tune_seed, final.seeds, or seed as a factor")
    if "seed" in factors and spec.final_seeds:
        raise sweep_error(
            name, "seed is a factor and final.seeds is set: finals would re-seed every cell; drop one"
        )
    if spec.tune_seed in spec.final_seeds:
        raise sweep_error(
            name,
            f"final.seeds must not include tune_seed ({spec.tune_seed}): "
            "the reported runs must be independent of the ones used for selection",
        )
    if not searched and spec.budget.trials_per_cell > 1:
        raise sweep_error(
            name,
            f"nothing is searched, so the {spec.budget.trials_per_cell} trials of a cell would all run the "
            "same configuration: set budget.trials_per_cell: 1 (add seed as a factor to replicate)",
        )
    if spec.budget.trials_per_cell == 0 and (searched or not spec.has_finals):
        raise sweep_error(
            name,
            "budget.trials_per_cell: 0 (no tuning) needs final.seeds and nothing under search / search_where "
            "(the finals run each cell as configured)",
        )
    _check_budget_check(spec)
    _check_tune_at(spec)
    _check_screen(spec)
    if spec.race is not None and spec.factors and spec.factor_names == (SIZE_FACTOR,):
        raise sweep_error(
            spec.name, f"final.race races the arms of each data size, but {SIZE_FACTOR} is the only factor: "
            "each size has one arm; remove final.race"
        )  # fmt: skip
    if spec.export and not spec.has_finals:
        raise sweep_error(
            spec.name,
            "export: true needs final runs to choose the winner from (mode tune_then_final, final.seeds)",
        )
    if spec.mode == "pareto":
        if spec.final_seeds:
            raise sweep_error(name, "mode: pareto has no final phase: remove final.seeds")
        if spec.pruner.name != "none":
            raise sweep_error(
                name, "mode: pareto cannot prune (Optuna has no multi-objective pruning): pruner: none"
            )
    elif spec.sampler.name == "nsgaii":
        raise sweep_error(name, "sampler nsgaii is multi-objective: use it with mode: pareto")
    if spec.sampler.name == "grid":
        _check_grid(spec)


def _check_size(spec: SweepSpec, key: str, value: Any) -> None:
    """``value`` names one of the data sizes: largest, smallest, or one of the factor's values."""
    sizes = dict(spec.factors).get(SIZE_FACTOR)
    if sizes is None:
        raise sweep_error(
            spec.name, f"{key} names a data size, but {SIZE_FACTOR} is not a factor of this sweep"
        )
    if isinstance(value, str) and value in SIZE_WORDS:
        return
    concrete = sizes != (AUTO_SIZES,)
    if (
        concrete
        and not isinstance(value, (list, dict))
        and any(format_value(v) == format_value(value) for v in sizes)
    ):
        return
    known = f" or one of {', '.join(format_value(v) for v in sizes)}" if concrete else ""
    raise sweep_error(
        spec.name,
        f"{key} must be largest, smallest{known} (the {SIZE_FACTOR} factor's values), got {value!r}",
    )


def _check_tune_at(spec: SweepSpec) -> None:
    tune_at = spec.budget.tune_at
    if tune_at is None:
        return
    if spec.mode != "tune_then_final" or not spec.has_finals or spec.budget.trials_per_cell == 0:
        raise sweep_error(
            spec.name,
            "budget.tune_at carries one data size's tuning to the others' finals: it needs tuning "
            "(budget.trials_per_cell >= 1) and final.seeds",
        )
    _check_size(spec, "budget.tune_at", tune_at)
    check = spec.budget.check
    if check is not None and format_value(check.size) != format_value(tune_at):
        raise sweep_error(
            spec.name,
            f"budget.check.size ({check.size}) must be budget.tune_at ({tune_at}): only the tuned size "
            "has tuning runs to check",
        )


def _check_budget_check(spec: SweepSpec) -> None:
    check = spec.budget.check
    if check is None:
        return
    if not spec.has_finals or spec.budget.trials_per_cell == 0:
        raise sweep_error(
            spec.name,
            "budget.check re-runs each arm's tuned configuration before its finals: it needs tuning "
            "(budget.trials_per_cell >= 1) and final.seeds; remove budget.check otherwise",
        )
    factors = dict(spec.factors)
    known = factors.get("strategy") or tuple(STRATEGIES)
    for name in check.strategies:
        if name not in known:
            raise sweep_error(
                spec.name, f"budget.check.strategies names '{name}', which is not among the sweep's "
                f"strategies ({', '.join(str(k) for k in known)})"
            )  # fmt: skip
    if factors.get(SIZE_FACTOR) is not None:
        _check_size(spec, "budget.check.size", check.size)
    elif check.size not in SIZE_WORDS:
        raise sweep_error(
            spec.name,
            f"budget.check.size must be largest or smallest (the one data size), got {check.size!r}",
        )


def _check_screen(spec: SweepSpec) -> None:
    if spec.screen is None:
        return
    backbones = dict(spec.factors).get("backbone")
    if backbones is None:
        raise sweep_error(
            spec.name, "screen chooses among the backbone factor's values, but this sweep has no 'backbone' "
            "factor: list backbone: [efficientnet_lite0, ...] under factors, or remove screen"
        )  # fmt: skip
    if spec.screen.keep > len(backbones):
        raise sweep_error(
            spec.name, f"screen.keep ({spec.screen.keep}) is larger than the {len(backbones)} backbones "
            "of the backbone factor: keep fewer, or list more backbones"
        )  # fmt: skip
    if spec.mode != "tune_then_final":
        raise sweep_error(
            spec.name, "screen is a phase of a tune-then-final study: remove it from a pareto sweep"
        )


def _check_grid(spec: SweepSpec) -> None:
    if spec.search_where or any(p.choices is None for p in spec.search):
        raise sweep_error(
            spec.name, "sampler grid needs every search parameter as choices: [...] and no search_where"
        )
    points = 1
    for param in spec.search:
        points *= len(param.choices or ())
    if spec.mode == "tune_then_final" and spec.budget.trials_per_cell > points:
        raise sweep_error(
            spec.name,
            f"budget.trials_per_cell={spec.budget.trials_per_cell} exceeds the grid's {points} points",
        )


def spec_as_dict(spec: SweepSpec) -> dict[str, Any]:
    """The resolved definition as plain data (logged as ``sweep.yaml`` and digested for resume)."""
    plain = asdict(spec)
    plain["factors"] = {k: list(v) for k, v in spec.factors}
    plain["where"] = {c.text: list(o) for c, o in spec.where}
    plain["search"] = {p.path: _param_dict(p) for p in spec.search}
    plain["search_where"] = {c.text: {p.path: _param_dict(p) for p in ps} for c, ps in spec.search_where}
    plain["base"] = list(spec.base)
    plain["overrides"] = list(spec.overrides)
    plain["final_seeds"] = list(spec.final_seeds)
    return plain


def _param_dict(p: SearchParam) -> dict[str, Any]:
    """As digested since the first studies (resume compares digests): ``integer``, not ``type``."""
    choices = None if p.choices is None else list(p.choices)
    out = {
        "low": p.low,
        "high": p.high,
        "log": p.log,
        "step": p.step,
        "integer": p.integer,
        "choices": choices,
    }
    return {k: v for k, v in out.items() if v not in (None, False)}


# --- overrides ---
# What the command line adds (overrides, a photo folder, a class map, data sizes) becomes part of the
# spec before it is checked: validated like the file, recorded with the study, and refused, like any
# other change, when a resumed study was started without it.
SIZE_LADDER = (5, 20, 80, 320, 1280, 5120)  # about x4 apart: a few sizes, not a grid


def with_overrides(spec: SweepSpec, overrides: tuple[str, ...]) -> SweepSpec:
    """``spec`` with command-line Hydra overrides appended to its base (factors still win)."""
    if not overrides:
        return spec
    searched = {p.path for p in spec.search} | {p.path for _, ps in spec.search_where for p in ps}
    for text in overrides:
        key, sep, _ = text.partition("=")
        key = key.lstrip("+~")
        if not sep or not key:
            raise sweep_error(spec.name, f"command-line override {text!r} must look like key=value")
        if key in spec.factor_names:
            raise sweep_error(
                spec.name, f"command-line override {text!r} sets '{key}', a factor of this sweep: "
                "its values come from the sweep file (edit factors there, or use another sweep)"
            )  # fmt: skip
        if key in searched:
            raise sweep_error(
                spec.name, f"command-line override {text!r} sets '{key}', which this sweep tunes"
            )
    return replace(spec, overrides=spec.overrides + tuple(overrides))


def with_photo_folder(spec: SweepSpec, root: str, class_map: str | None) -> SweepSpec:
    """The photo protocol on a user's folder: ``data.root``, and ``as_is`` when a class map is given."""
    spec = with_overrides(spec, (override("data.root", root),))
    if class_map is None:
        return spec
    factors = dict(spec.factors)
    strategies = factors.get("strategy")
    if strategies is None:
        raise sweep_error(spec.name, "a class map needs a sweep with a 'strategy' factor (as_is joins it)")
    if "as_is" not in strategies:
        factors["strategy"] = (*strategies, "as_is")
    condition = parse_condition(spec.name, "strategy=as_is", factors)
    where = (*spec.where, (condition, (f"strategy.class_map={class_map}",)))
    return replace(spec, factors=tuple(factors.items()), where=where)


def derive_sizes(smallest_class: int) -> tuple[Scalar, ...]:
    """A few data sizes from 5 per class up to all of the smallest class (``None``); a ladder step is
    kept while at most half the smallest class, so the last one differs from all by x2 at least."""
    if smallest_class < 1:
        raise ValueError(f"smallest_class must be >= 1, got {smallest_class=}")
    sizes: list[Scalar] = [n for n in SIZE_LADDER if 2 * n <= smallest_class]
    return (*sizes, None)


def has_auto_sizes(spec: SweepSpec) -> bool:
    return dict(spec.factors).get(SIZE_FACTOR) == (AUTO_SIZES,)


def with_sizes(spec: SweepSpec, sizes: tuple[Scalar, ...]) -> SweepSpec:
    """Replace the ``[auto]`` data-size factor by concrete sizes."""
    factors = tuple((k, sizes if k == SIZE_FACTOR else v) for k, v in spec.factors)
    return replace(spec, factors=factors)


# --- request ---
# A missing data folder or a missing or bad sweep file is reported from here, before torch is imported
# (a second, not the 20 s a first import of torch takes).
PHOTO_SWEEP = "photos"  # the protocol --data runs
DEFAULT_SWEEP = "default"


@dataclass(frozen=True)
class SweepRequest:
    """A parsed ``tlbench sweep`` command line."""

    sweep: str | None = None  # a name in sweeps/ or a YAML path (None: photos with data, else default)
    data: str | None = None  # a photo folder: the photo protocol on it
    class_map: str | None = None
    overrides: tuple[str, ...] = ()
    study: str | None = None
    workers: int | None = 1  # None: --workers auto (cost.threads.auto_workers, decided by run_sweep)
    storage: str | None = None
    worker: bool = False  # a worker process spawned by a supervisor
    worker_index: int = 0
    threads: int | None = None  # a spawned worker: the torch threads its supervisor planned

    @property
    def sweep_name(self) -> str:
        return self.sweep or (PHOTO_SWEEP if self.data else DEFAULT_SWEEP)

    def forwarded(self) -> list[str]:
        """What a spawned worker needs to rebuild the same definition."""
        out = ["--data", self.data] if self.data else []
        out += ["--class-map", self.class_map] if self.class_map else []
        return [*out, *self.overrides]


def check_request(request: SweepRequest) -> None:
    """Every mistake that needs no config composition and no torch: one line each, at once."""
    if request.workers is not None and request.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {request.workers}")
    if request.class_map and not request.data:
        raise ConfigError("--class-map goes with --data FOLDER (it maps that folder's classes)")
    if request.data is not None and not Path(request.data).expanduser().is_dir():
        raise ConfigError(f"--data {request.data}: no such folder (give a folder of class sub-folders)")
    spec = load_sweep(request.sweep_name)  # a missing or bad sweep file: one line, naming the file
    given = request.data or any(o.startswith("data.root=") for o in request.overrides)
    if needs_folder(spec) and not given:
        what = "the photo protocol" if spec.name == PHOTO_SWEEP else f"sweep '{spec.name}'"
        raise ConfigError(
            f"{what} trains on your photos and needs their folder: make sweep SWEEP={spec.name} "
            "DATA=path/to/folder (tlbench sweep --data PATH)"
        )


def needs_folder(spec: SweepSpec) -> bool:
    """An image-folder sweep whose file leaves the folder to the command line (--data)."""
    return "data=imagefolder" in spec.base and not any(o.startswith("data.root=") for o in spec.base)


def shipped_sweeps() -> list[tuple[str, str]]:
    """(name, first sentence of its description) of every sweep in the sweeps folder, for ``--help``."""
    out = []
    for path in sorted(sweeps_dir().glob("*.yaml")):
        try:
            text = str((yaml.safe_load(path.read_text()) or {}).get("description") or "")
        except yaml.YAMLError:
            text = "(not valid YAML)"
        first = " ".join(text.split()).split(". ")[0].rstrip(".")
        out.append((path.stem, first if len(first) <= 100 else first[:99] + "…"))
    return out
