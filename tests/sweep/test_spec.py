"""Sweep files: parsing, structural validation, validation against the config tree, cells."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tlbench.errors import ConfigError
from tlbench.sweep.cells import Cell, cell_overrides, cell_search, expand_cells, tuning_budget, tuning_cell
from tlbench.sweep.check import check_against_config
from tlbench.sweep.loader import load_sweep, parse_sweep, sweeps_dir
from tlbench.sweep.overrides import has_auto_sizes, with_photo_folder, with_sizes
from tlbench.sweep.plan import CellFacts, run_label, run_name
from tlbench.sweep.request import needs_folder

from .conftest import TINY_BASE

GOOD: dict[str, Any] = {
    "base": TINY_BASE,
    "factors": {"strategy": ["linear_probe", "partial"], "data.n_per_class": [5, 10]},
    "where": {"strategy=partial": ["strategy.freeze_depth=6"]},
    "search": {"optimizer.lr": {"low": 1e-4, "high": 0.1, "log": True}},
    "search_where": {"strategy=partial": {"optimizer.weight_decay": {"choices": [0.0, 1e-4]}}},
    "budget": {"trials_per_cell": 2},
    "final": {"seeds": [1, 2]},
}


def _with(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_with(factor={}), "unknown key 'factor' in the sweep file — did you mean 'factors'"),
        (_with(factors={"strategy": []}), "factor 'strategy' needs a non-empty list"),
        (_with(factors={"strategy": ["scratch", "scratch"]}), "lists a value twice"),
        (_with(search={"optimizer.lr": {"low": 0.1, "high": 0.01}}), "low must be < high"),
        (_with(search={"optimizer.lr": {"low": 0.0, "high": 0.1, "log": True}}), "log range needs low > 0"),
        (_with(search={"optimizer.lr": {"low": 1e-3}}), "needs low and high"),
        (_with(search={"optimizer.lr": {"low": 1e-3, "high": 1, "scale": "log"}}), "unknown key 'scale'"),
        (_with(search={"optimizer.lr": {"choices": []}}), "choices must be a non-empty list"),
        (_with(budget={"trials_per_cell": -1}), "budget.trials_per_cell must be an integer >= 0"),
        (
            _with(budget={"trials_per_cell": 0}),
            "trials_per_cell: 0 (no tuning) needs final.seeds and nothing",
        ),
        (_with(budget={"trial_per_cell": 2}), "did you mean 'trials_per_cell'"),
        (_with(sampler={"name": "cmaes"}), "sampler.name must be one of"),
        (_with(pruner={"name": "patient"}), "pruner.name must be one of"),
        (_with(mode="bayes"), "mode must be one of"),
        (_with(where={"strategy=scratch": ["x=1"]}), "strategy=scratch is not one of the factor's values"),
        (_with(where={"backbone=resnet18": ["x=1"]}), "names 'backbone', which is not a factor"),
        (_with(base=["data=synthetic", "trainer quick"]), "base must be a list of Hydra overrides"),
        (_with(final={"seeds": [0, 1]}), "final.seeds must not include tune_seed (0)"),
        (_with(search={"data.n_per_class": {"choices": [5]}}), "is both a factor and searched"),
        (_with(search={}, search_where={}), "nothing is searched"),
        (_with(sampler={"name": "grid"}), "sampler grid needs every search parameter as choices"),
        (_with(mode="pareto", budget={"trials": 4}), "unknown key 'trials' in budget"),
        (
            _with(mode="pareto", final={}, budget={"trials_per_cell": 0}),
            "trials_per_cell must be an integer >= 1",
        ),
        (_with(mode="pareto", final={}, pruner={"name": "hyperband"}), "cannot prune"),
    ],
)
def test_bad_sweep_files_fail_with_a_clear_message(data: dict[str, Any], message: str) -> None:
    # each structural mistake is one ConfigError naming the sweep and the offending key
    with pytest.raises(ConfigError, match=r"^sweep 'bad': ") as info:
        parse_sweep(data, name="bad")
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_with(factors={"data.n_per_clas": [5]}, where={}, search_where={}), "factor 'data.n_per_clas'"),
        (
            _with(factors={"strategy": ["linear_probe", "fine_tune"]}, where={}, search_where={}),
            "factor 'strategy'",
        ),
        (
            _with(search={"optimizer.learning_rate": {"low": 1e-4, "high": 0.1}}),
            "search key 'optimizer.learning_rate'",
        ),
        (_with(search={"optimizer.lr": {"low": 1e-4, "high": 20.0}}), "search key 'optimizer.lr'"),
        (_with(base=[*TINY_BASE, "tracking=disabled"]), "remove tracking=disabled"),
    ],
)
def test_unknown_paths_and_values_are_caught_by_composing(data: dict[str, Any], message: str) -> None:
    # paths and values only Hydra knows about are checked before any study exists
    with pytest.raises(ConfigError) as info:
        check_against_config(parse_sweep(data, name="bad"))
    assert message in str(info.value)


def test_unknown_factor_path_suggests_the_right_one() -> None:
    # a typo in a factor path gets Hydra's "did you mean" hint
    data = _with(factors={"data.n_per_clas": [5]}, where={}, search_where={})
    with pytest.raises(ConfigError, match=r"did you mean 'data\.n_per_class'"):
        check_against_config(parse_sweep(data, name="bad"))


@pytest.mark.parametrize("name", sorted(p.stem for p in sweeps_dir().glob("*.yaml")))
def test_every_shipped_sweep_parses_and_composes(name: str, tmp_path: Path) -> None:
    # the sweeps in sweeps/ are valid against today's config tree (photos: as --data makes it, on a
    # folder that is only composed here, and with concrete sizes for its [auto] data-size factor)
    spec = load_sweep(name)
    if needs_folder(spec):
        spec = with_photo_folder(spec, str(tmp_path), "{ants: [ant]}" if has_auto_sizes(spec) else None)
    if has_auto_sizes(spec):
        spec = with_sizes(spec, (5, None))
    assert check_against_config(spec).tracking.enabled


def test_sweeps_dir_env_points_at_another_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # TLBENCH_SWEEPS_DIR replaces the packaged sweeps/: names are looked up there, and only there
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(GOOD))
    monkeypatch.setenv("TLBENCH_SWEEPS_DIR", str(tmp_path))
    assert load_sweep("mine").name == "mine"
    with pytest.raises(ConfigError, match=r"known sweeps: mine$"):
        load_sweep("default")


def test_required_sweeps_exist() -> None:
    # the list of sweep definitions
    names = {p.stem for p in sweeps_dir().glob("*.yaml")}
    assert {"default", "smoke", "freeze_depth", "lr_sensitivity", "data_scaling"} <= names


def test_cells_cross_factors_and_apply_where_and_search_where(tmp_path: Path) -> None:
    # 2 x 2 cells; partial cells get their freeze depth and an extra searched parameter
    spec = parse_sweep(GOOD, name="good")
    cells = expand_cells(spec)
    assert [c.key for c in cells] == [
        "data.n_per_class=5,strategy=linear_probe",
        "data.n_per_class=10,strategy=linear_probe",
        "data.n_per_class=5,strategy=partial",
        "data.n_per_class=10,strategy=partial",
    ]
    partial = cells[2]
    assert cell_overrides(spec, partial)[-3:] == [
        "strategy=partial",
        "data.n_per_class=5",
        "strategy.freeze_depth=6",
    ]
    assert [p.path for p in cell_search(spec, partial)] == ["optimizer.lr", "optimizer.weight_decay"]
    assert [p.path for p in cell_search(spec, cells[0])] == ["optimizer.lr"]


TRAINED_SWEEPS = sorted(
    p.stem
    for p in sweeps_dir().glob("*.yaml")
    if p.stem != "lr_sensitivity"  # a grid: no tuning at all
)


@pytest.mark.parametrize("name", TRAINED_SWEEPS)
def test_every_trained_arm_of_a_shipped_sweep_is_tuned_alike(name: str) -> None:
    # issue 19: every cell that trains searches something and gets the same number of tuning trials;
    # only an arm that trains nothing (as_is) is left untuned
    spec = load_sweep(name)
    if has_auto_sizes(spec):
        spec = with_sizes(with_photo_folder(spec, "/photos", "{ants: [ant]}"), (5, None))
    budgets = {}
    for cell in expand_cells(spec):
        trains = cell.get("strategy") != "as_is"
        assert bool(cell_search(spec, cell)) == trains, cell.key
        budgets[cell.key] = tuning_budget(spec, tuning_cell(spec, cell))  # here, or where tune_at says
    trained = {budgets[c.key] for c in expand_cells(spec) if c.get("strategy") != "as_is"}
    assert len(trained) == 1 and trained.pop() >= 2, budgets
    assert all(b == 0 for k, b in budgets.items() if "strategy=as_is" in k)


def test_a_cell_with_nothing_to_search_is_not_tuned() -> None:
    # with finals, a cell whose search space is empty gets no tuning trials (its finals run it as is);
    # without finals (a grid), each cell still runs its one trial
    data = _with(search={}, search_where={"strategy=partial": {"optimizer.lr": {"low": 1e-3, "high": 0.1}}})
    spec = parse_sweep(data, name="mixed")
    budgets = {c.key: tuning_budget(spec, c) for c in expand_cells(spec)}
    assert budgets["data.n_per_class=5,strategy=linear_probe"] == 0
    assert budgets["data.n_per_class=5,strategy=partial"] == 2
    grid = parse_sweep({**data, "final": {}, "budget": {"trials_per_cell": 1}}, name="grid")
    assert all(tuning_budget(grid, c) == 1 for c in expand_cells(grid))


@pytest.mark.parametrize(
    ("cell", "role", "kwargs", "name"),
    [
        ((("strategy", "lp_ft"), ("data.n_per_class", 5)), "tune", {"number": 3}, "tune lp_ft n=5 #3"),
        (
            (("strategy", "lp_ft"), ("data.n_per_class", None)),
            "final",
            {"number": 9, "seed": 2},
            "lp_ft n=all seed=2",
        ),
        (
            (("backbone", "efficientnet_lite1"), ("strategy", "full_finetune")),
            "budget_check",
            {"number": 0, "factor": 2},
            "check full_finetune n=20 efficientnet_lite1 x2",
        ),
        ((("strategy.freeze_depth", 4),), "final", {"number": 1, "seed": 1}, "partial n=20 k=4 seed=1"),
    ],
)
def test_run_names_are_readable(cell: Any, role: str, kwargs: dict[str, Any], name: str) -> None:
    # strategy, data size ("all" for the whole pool), other factors briefly, then the role's own part
    values = dict(cell)
    facts = CellFacts(
        strategy=str(values.get("strategy", "partial")), trains_by_steps=True, min_steps=None, epochs=1,
        graph=("b", "32", 32, "x", None), n_per_class=values.get("data.n_per_class", 20),
    )  # fmt: skip
    assert run_name(role, run_label(facts, Cell(cell)), **kwargs) == name
