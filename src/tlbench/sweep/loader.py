"""Find ``sweeps/<name>.yaml``, parse it into a :class:`SweepSpec`, check the cross-field rules."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import yaml

from tlbench.errors import ConfigError
from tlbench.packaged import packaged_dir
from tlbench.strategies import STRATEGIES
from tlbench.sweep.schema import typed_sweep
from tlbench.sweep.spec import (
    AUTO_SIZES,
    MODES,
    PRUNERS,
    SAMPLERS,
    SCREEN_SCORES,
    SIZE_FACTOR,
    SIZE_WORDS,
    Budget,
    BudgetCheck,
    PrunerSpec,
    Race,
    SamplerSpec,
    ScreenSpec,
    SweepSpec,
    as_overrides,
    at_least,
    format_value,
    parse_condition,
    parse_factors,
    parse_search,
    sweep_error,
)

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
    """A validated :class:`SweepSpec` from the YAML mapping (paths are checked by :mod:`.check`).

    Keys and types come from the schema (:func:`typed_sweep`); values and combinations are checked here.
    """
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
    spec = SweepSpec(
        name=name,
        description=raw["description"],
        mode=mode,
        base=as_overrides(name, "base", raw["base"]),
        factors=factors,
        where=where,
        search=parse_search(name, "search", raw["search"]),
        search_where=search_where,
        budget=_budget(name, raw["budget"], mode),
        final_seeds=_final_seeds(name, raw["final"]["seeds"]),
        race=_race(name, raw["final"]["race"], raw["final"]["seeds"]),
        tune_seed=at_least(name, "tune_seed", raw["tune_seed"], 0),
        sampler=_sampler(name, raw["sampler"], mode),
        pruner=_pruner(name, raw["pruner"]),
        report=raw["report"],
        export=raw["export"],
        screen=None if raw["screen"] is None else _screen(name, raw["screen"]),
    )
    _check_combinations(spec)
    return spec


def _budget(name: str, raw: Mapping[str, Any], mode: str) -> Budget:
    return Budget(
        trials_per_cell=at_least(
            name, "budget.trials_per_cell", raw["trials_per_cell"], 1 if mode == "pareto" else 0
        ),
        max_retries=at_least(name, "budget.max_retries", raw["max_retries"], 0),
        check=None if raw["check"] is None else _budget_check(name, raw["check"]),
        tune_at=raw["tune_at"],
    )


def _budget_check(name: str, raw: Mapping[str, Any]) -> BudgetCheck:
    size = raw["size"]
    if isinstance(size, (list, dict)):
        raise sweep_error(name, f"budget.check.size must be largest, smallest or a data size, got {size!r}")
    return BudgetCheck(
        factor=at_least(name, "budget.check.factor", raw["factor"], 2),
        size=size,
        strategies=tuple(raw["strategies"]),
    )


def _final_seeds(name: str, seeds: list[int]) -> tuple[int, ...]:
    if any(s < 0 for s in seeds):
        raise sweep_error(name, f"final.seeds must be a list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise sweep_error(name, f"final.seeds lists a seed twice: {seeds}")
    return tuple(seeds)


def _race(name: str, raw: Mapping[str, Any] | None, seeds: list[int]) -> Race | None:
    if raw is None:
        return None
    if len(seeds) < 2:
        raise sweep_error(
            name, "final.race needs at least 2 final.seeds (a paired interval needs 2 seeds per arm)"
        )
    return Race(
        cap=at_least(name, "final.race.cap", raw["cap"], len(seeds)),
        round=at_least(name, "final.race.round", raw["round"], 1),
    )


def _screen(name: str, raw: Mapping[str, Any]) -> ScreenSpec:
    score = raw["score"]
    if score not in SCREEN_SCORES and score not in SCREEN_SCORES.values():
        raise sweep_error(name, f"screen.score must be one of {', '.join(SCREEN_SCORES)}, got {score!r}")
    return ScreenSpec(
        keep=at_least(name, "screen.keep", raw["keep"], 1), score=SCREEN_SCORES.get(score, score)
    )


def _sampler(name: str, raw: Mapping[str, Any], mode: str) -> SamplerSpec:
    sampler = raw["name"] or ("nsgaii" if mode == "pareto" else "tpe")
    if sampler not in SAMPLERS:
        raise sweep_error(name, f"sampler.name must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    startup = raw["n_startup_trials"]
    return SamplerSpec(
        name=sampler,
        seed=at_least(name, "sampler.seed", raw["seed"], 0),
        n_startup_trials=None if startup is None else at_least(name, "sampler.n_startup_trials", startup, 0),
    )


def _pruner(name: str, raw: Mapping[str, Any]) -> PrunerSpec:
    pruner = raw["name"]
    if pruner not in PRUNERS:
        raise sweep_error(name, f"pruner.name must be one of {', '.join(PRUNERS)}, got {pruner!r}")
    return PrunerSpec(
        name=pruner,
        min_resource=at_least(name, "pruner.min_resource", raw["min_resource"], 1),
        reduction_factor=at_least(name, "pruner.reduction_factor", raw["reduction_factor"], 2),
        n_warmup_steps=at_least(name, "pruner.n_warmup_steps", raw["n_warmup_steps"], 0),
    )


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
    if dict(spec.factors).get(SIZE_FACTOR) is not None:
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


def _param_dict(param: Any) -> dict[str, Any]:
    out = {k: v for k, v in asdict(param).items() if k != "path" and v not in (None, False)}
    if "choices" in out:
        out["choices"] = list(out["choices"])
    return out
