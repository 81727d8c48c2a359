"""Samplers and pruners from the sweep file, seeded so that a resumed study does not replay itself.

A sampler is built afresh for every claimed trial with a seed derived from the sweep's seed, the
cell and the number of trials the cell's study already holds: a serial sweep is reproducible, and a
resumed one continues the random sequence instead of proposing trial 0's parameters again.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Sequence
from typing import Any

import optuna

from tlbench.sweep.pruning import FairPruner
from tlbench.sweep.space import grid_space
from tlbench.sweep.spec import PrunerSpec, SamplerSpec, SearchParam


def derived_seed(base: int, cell_key: str, salt: int) -> int:
    """Stable across processes and Python versions (``hash()`` of a str is salted per process)."""
    return (base * 1_000_003 + zlib.crc32(cell_key.encode()) + salt * 7_919) % (2**31 - 1)


class _GridSampler(optuna.samplers.GridSampler):
    """Grid search under ask/tell: Optuna's version calls ``study.stop()`` (only valid inside
    ``optimize``) once the grid is exhausted; here the cell's budget decides when to stop."""

    def after_trial(self, *args: Any, **kwargs: Any) -> None:
        return None


def make_sampler(
    spec: SamplerSpec,
    params: Sequence[SearchParam],
    *,
    cell_key: str,
    salt: int,
    multi_objective: bool = False,
) -> optuna.samplers.BaseSampler:
    seed = derived_seed(spec.seed, cell_key, salt)
    if spec.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # Grid and QMC keep their position in the study's storage and derive their order (grid
    # shuffle, Sobol scramble) from the seed: it must not change between the trials of a cell. It
    # is also the same for every cell, so all cells try the same candidate design (in their ranges).
    if spec.name == "grid":
        return _GridSampler(grid_space(params), seed=spec.seed)
    if spec.name == "qmc":
        with warnings.catch_warnings():  # "experimental since 3.0": a stable API by now, not news to users
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(
                scramble=True,
                seed=spec.seed,
                warn_asynchronous_seeding=False,
                warn_independent_sampling=False,
            )
    if spec.name == "nsgaii":
        return optuna.samplers.NSGAIISampler(seed=seed)
    startup = 10 if spec.n_startup_trials is None else spec.n_startup_trials  # Optuna's default
    return optuna.samplers.TPESampler(
        seed=seed, constant_liar=True, multivariate=multi_objective, n_startup_trials=startup
    )


def make_pruner(spec: PrunerSpec) -> optuna.pruners.BasePruner:
    """Resource = epochs, or budget fractions with a step budget; each cell has its own study."""
    inner: optuna.pruners.BasePruner
    if spec.name == "successive_halving":
        inner = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spec.min_resource, reduction_factor=spec.reduction_factor
        )
    elif spec.name == "hyperband":
        inner = optuna.pruners.HyperbandPruner(
            min_resource=spec.min_resource, reduction_factor=spec.reduction_factor
        )
    elif spec.name == "median":
        inner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=spec.n_warmup_steps)
    else:
        return optuna.pruners.NopPruner()
    return FairPruner(inner)
