"""Samplers and pruners from the sweep file, seeded so that a resumed study does not replay itself.

A sampler is built afresh for every claimed trial with a seed derived from the sweep's seed, the
cell and the number of trials the cell's study already holds: a serial sweep is reproducible, and a
resumed one continues the random sequence instead of proposing trial 0's parameters again.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution

from tlbench.sweep.pruning import FairPruner
from tlbench.sweep.space import distribution, grid_space
from tlbench.sweep.spec import PrunerSpec, SamplerSpec, SearchParam


def derived_seed(base: int, cell_key: str, salt: int) -> int:
    """Stable across processes and Python versions (``hash()`` of a str is salted per process)."""
    return (base * 1_000_003 + zlib.crc32(cell_key.encode()) + salt * 7_919) % (2**31 - 1)


class _GridSampler(optuna.samplers.GridSampler):
    """Grid search under ask/tell: Optuna's version calls ``study.stop()`` (only valid inside
    ``optimize``) once the grid is exhausted; here the cell's budget decides when to stop."""

    def after_trial(self, *args: Any, **kwargs: Any) -> None:
        return None


SamplerFactory = Callable[[SamplerSpec, Sequence[SearchParam], int, bool], optuna.samplers.BaseSampler]
PrunerFactory = Callable[[PrunerSpec], optuna.pruners.BasePruner]


class _QMCSampler(optuna.samplers.QMCSampler):
    """Every trial a point of the cell's Sobol design, the first one included.

    Optuna's sampler draws a study's first trial with its independent (random) sampler and learns the
    design's space from the first completed or pruned trial. With a sampler built afresh per trial,
    a cell whose first trial failed (collapsed) drew the same random value again for its second: two
    trials of one configuration. The space is known from the sweep file, so it is given here.
    """

    def __init__(self, space: dict[str, BaseDistribution], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._space = space

    def infer_relative_search_space(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self._space)


def _qmc(
    spec: SamplerSpec, params: Sequence[SearchParam], seed: int, multi: bool
) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():  # "experimental since 3.0": a stable API by now, not news to users
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _QMCSampler(
            {p.path: distribution(p) for p in params},
            scramble=True,
            seed=spec.seed,
            warn_asynchronous_seeding=False,
            warn_independent_sampling=False,
        )


def _tpe(
    spec: SamplerSpec, params: Sequence[SearchParam], seed: int, multi: bool
) -> optuna.samplers.BaseSampler:
    startup = 10 if spec.n_startup_trials is None else spec.n_startup_trials  # Optuna's default
    return optuna.samplers.TPESampler(
        seed=seed, constant_liar=True, multivariate=multi, n_startup_trials=startup
    )


# name -> factory(spec, searched params, derived seed, multi-objective). Grid and QMC keep their
# position in the study's storage and derive their order (grid shuffle, Sobol scramble) from the
# sweep's seed, not the derived one: it must not change between the trials of a cell. It is also the
# same for every cell, so all cells try the same candidate design (in their ranges).
SAMPLERS: dict[str, SamplerFactory] = {
    "tpe": _tpe,
    "random": lambda spec, params, seed, multi: optuna.samplers.RandomSampler(seed=seed),
    "qmc": _qmc,
    "grid": lambda spec, params, seed, multi: _GridSampler(grid_space(params), seed=spec.seed),
    "nsgaii": lambda spec, params, seed, multi: optuna.samplers.NSGAIISampler(seed=seed),
}

# name -> factory(spec); the resource is epochs, or 1/val_checks of a step budget (sweep.pruning),
# and each cell has its own study, so rungs compare like with like. Every pruner but "none" is
# wrapped in FairPruner.
PRUNERS: dict[str, PrunerFactory] = {
    "none": lambda spec: optuna.pruners.NopPruner(),
    "successive_halving": lambda spec: FairPruner(
        optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spec.min_resource, reduction_factor=spec.reduction_factor
        )
    ),
    "hyperband": lambda spec: FairPruner(
        optuna.pruners.HyperbandPruner(min_resource=spec.min_resource, reduction_factor=spec.reduction_factor)
    ),
    "median": lambda spec: FairPruner(
        optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=spec.n_warmup_steps)
    ),
}


def make_sampler(
    spec: SamplerSpec,
    params: Sequence[SearchParam],
    *,
    cell_key: str,
    salt: int,
    multi_objective: bool = False,
) -> optuna.samplers.BaseSampler:
    """The sampler of ``spec.name`` (validated by the sweep spec against the same names)."""
    return SAMPLERS[spec.name](spec, params, derived_seed(spec.seed, cell_key, salt), multi_objective)


def make_pruner(spec: PrunerSpec) -> optuna.pruners.BasePruner:
    return PRUNERS[spec.name](spec)
