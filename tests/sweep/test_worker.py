"""Samplers and pruners are name -> factory tables covering exactly the names a sweep file may use."""

from __future__ import annotations

import optuna
import pytest

from tlbench.sweep import spec
from tlbench.sweep.spec import PrunerSpec, SamplerSpec, SearchParam
from tlbench.sweep.worker import PRUNERS, SAMPLERS, FairPruner, make_pruner, make_sampler


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


def test_qmc_gives_a_new_design_point_after_a_failed_first_trial() -> None:
    # the sweep builds a sampler per trial; a cell whose first trial failed (e.g. collapsed) once got
    # the same random LR again for its second trial (Optuna's QMC draws until a trial completes)
    from optuna.trial import TrialState

    from tlbench.sweep.plan import suggest

    params = [SearchParam("optimizer.lr", low=1e-4, high=1e-1, log=True)]
    study = optuna.create_study(direction="maximize")
    values = []
    for salt, state in enumerate([TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]):
        study.sampler = make_sampler(SamplerSpec("qmc", seed=0), params, cell_key="c", salt=salt)
        trial = study.ask()
        values.append(suggest(trial, params)["optimizer.lr"])
        study.tell(trial, 0.5 if state == TrialState.COMPLETE else None, state=state)
    assert len(set(values)) == 3 and all(1e-4 <= v <= 1e-1 for v in values)
    # and they are the scrambled Sobol design's first points, the same for a fresh study
    again = optuna.create_study(direction="maximize")
    again.sampler = make_sampler(SamplerSpec("qmc", seed=0), params, cell_key="other", salt=0)
    trial = again.ask()
    assert suggest(trial, params)["optimizer.lr"] == values[0]
