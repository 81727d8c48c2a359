"""Samplers and pruners are name -> factory tables covering exactly the names a sweep file may use."""

from __future__ import annotations

import optuna
import pytest

from tlbench.sweep import spec
from tlbench.sweep.pruning import FairPruner
from tlbench.sweep.samplers import PRUNERS, SAMPLERS, make_pruner, make_sampler
from tlbench.sweep.spec import PrunerSpec, SamplerSpec, SearchParam


def test_the_tables_cover_the_names_the_spec_accepts() -> None:
    # a name the spec validates always has a factory, and no factory is unreachable
    assert set(SAMPLERS) == set(spec.SAMPLERS) and set(PRUNERS) == set(spec.PRUNERS)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
        ("qmc", optuna.samplers.QMCSampler),
        ("grid", optuna.samplers.GridSampler),
        ("nsgaii", optuna.samplers.NSGAIISampler),
    ],
)
def test_each_sampler_name_builds_its_optuna_sampler(name: str, kind: type) -> None:
    params = [SearchParam("optimizer.lr", choices=(0.1, 0.01))]
    assert isinstance(make_sampler(SamplerSpec(name), params, cell_key="c", salt=0), kind)


def test_pruners_other_than_none_are_fair() -> None:
    # "none" never prunes; every other pruner is wrapped so a cell keeps at least one completed trial
    assert isinstance(make_pruner(PrunerSpec("none")), optuna.pruners.NopPruner)
    for name in ("successive_halving", "hyperband", "median"):
        assert isinstance(make_pruner(PrunerSpec(name)), FairPruner)
