"""Search spaces as Optuna distributions, and sampled values as Hydra overrides.

Optuna parameter names are the config paths themselves (``optimizer.lr``), so the dashboard, the
stored trials and the overrides a trial ran with all use one vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import BaseTrial

from tlbench.sweep.cells import override
from tlbench.sweep.spec import Scalar, SearchParam, SweepSpec


def distribution(param: SearchParam) -> BaseDistribution:
    if param.choices is not None:
        return CategoricalDistribution(list(param.choices))
    assert param.low is not None and param.high is not None  # guaranteed by the parser
    if param.integer:
        step = int(param.step) if param.step is not None else 1
        return IntDistribution(int(param.low), int(param.high), log=param.log, step=step)
    return FloatDistribution(param.low, param.high, log=param.log, step=param.step)


def suggest(trial: BaseTrial, params: Iterable[SearchParam]) -> dict[str, Any]:
    """Sample (or, for enqueued final trials, read back) each parameter's value."""
    values: dict[str, Any] = {}
    for param in params:
        dist = distribution(param)
        if isinstance(dist, CategoricalDistribution):
            values[param.path] = trial.suggest_categorical(param.path, dist.choices)
        elif isinstance(dist, IntDistribution):
            values[param.path] = trial.suggest_int(
                param.path, dist.low, dist.high, step=dist.step, log=dist.log
            )
        else:
            assert isinstance(dist, FloatDistribution)
            values[param.path] = trial.suggest_float(
                param.path, dist.low, dist.high, step=dist.step, log=dist.log
            )
    return values


def suggest_factors(trial: BaseTrial, spec: SweepSpec) -> dict[str, Scalar]:
    """Pareto mode: the crossed factors become categorical parameters of the one study."""
    return {name: trial.suggest_categorical(name, list(values)) for name, values in spec.factors}


def param_overrides(values: Mapping[str, Any]) -> list[str]:
    return [override(path, value) for path, value in values.items()]


def grid_space(params: Iterable[SearchParam]) -> dict[str, list[Any]]:
    """GridSampler's search space (every parameter has choices: checked by the loader)."""
    return {p.path: list(p.choices or ()) for p in params}
