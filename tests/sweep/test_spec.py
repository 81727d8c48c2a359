"""Sweep files: schema errors, parsing, validation, and what the command line adds (overrides, photos)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from tlbench.commands.sweep import main as sweep_main
from tlbench.errors import ConfigError
from tlbench.sweep.plan import (
    Cell,
    CellFacts,
    cell_overrides,
    cell_search,
    check_against_config,
    expand_cells,
    run_label,
    run_name,
    tuning_budget,
    tuning_cell,
)
from tlbench.sweep.spec import (
    derive_sizes,
    has_auto_sizes,
    load_sweep,
    needs_folder,
    parse_sweep,
    sweeps_dir,
    typed_sweep,
    with_overrides,
    with_photo_folder,
    with_sizes,
)

from .conftest import TINY_BASE, SweepWriter

# --- spec ---
# Sweep files: parsing, structural validation, validation against the config tree, cells.
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


# --- schema ---
# The sweep file schema: unknown keys and wrong types are one line naming the key path (issue 13, part 4).
@pytest.mark.parametrize(
    ("data", "message"),
    [
        # unknown keys, at every depth, with the key that was probably meant
        (_with(sampler={"nam": "tpe"}), "unknown key 'nam' in sampler — did you mean 'name'?"),
        (_with(final={"seed": [1]}), "unknown key 'seed' in final — did you mean 'seeds'?"),
        (
            _with(search_where={"strategy=partial": {"optimizer.lr": {"lw": 1, "high": 2}}}),
            "unknown key 'lw' in search_where['strategy=partial'].optimizer.lr — did you mean 'low'?",
        ),
        ({**GOOD, 7: 1}, "unknown key '7' in the sweep file (allowed: description, mode,"),
        # wrong types: the key path, what is expected, what was found
        (
            _with(budget={"trials_per_cell": "three"}),
            "budget.trials_per_cell must be an integer >= 0, got 'three'",
        ),
        (_with(budget={"trials_per_cell": 2.5}), "budget.trials_per_cell must be an integer >= 0, got 2.5"),
        (_with(tune_seed=True), "tune_seed must be an integer >= 0, got True"),
        (_with(budget=3), "budget must be a mapping (trials_per_cell, max_retries, ...), got 3"),
        (
            _with(search={"optimizer.lr": {"low": "abc", "high": 1}}),
            "search.optimizer.lr.low must be a number, got 'abc'",
        ),
        (_with(search={"optimizer.lr": 3}), "search.optimizer.lr must be a mapping with low and high"),
        (_with(search_where={"strategy=partial": 5}), "search_where['strategy=partial'] must be a mapping"),
        (
            _with(factors={"data.n_per_class": 5}),
            "factors.data.n_per_class must be a non-empty list of values, got 5",
        ),
        (
            _with(where={"strategy=partial": "strategy.freeze_depth=6"}),
            "where['strategy=partial'] must be a list of Hydra overrides like 'trainer.epochs=4'",
        ),
        (_with(final={"seeds": [1, "two"]}), "final.seeds[1] must be an integer, got 'two'"),
        (_with(report="maybe"), "report must be true or false, got 'maybe'"),
        (_with(description=["a", "b"]), "description must be a string, got ['a', 'b']"),
        (
            _with(base=["data=synthetic", "x=${oops"]),
            "base[1] ('x=${oops') is not a valid ${...} interpolation",
        ),
    ],
)
def test_schema_errors_name_the_key_path_and_the_fix(data: dict[str, Any], message: str) -> None:
    # one ConfigError (no OmegaConf exception, no traceback) naming the sweep and the offending key
    with pytest.raises(ConfigError, match=r"^sweep 'bad': ") as info:
        parse_sweep(data, name="bad")
    assert message in str(info.value)
    assert "\n" not in str(info.value) and "object_type" not in str(info.value)


def test_the_schema_fills_defaults_and_keeps_values_as_written() -> None:
    # absent or empty sections get their defaults; overrides keep ${...}; an int step stays an int
    data = {
        "where": None,
        "base": ["data.root=${oc.env:HOME}"],
        "search": {"model.width": {"low": 1, "high": 9, "step": 2, "type": "int"}},
        "factors": {"seed": [1, 2.5, None, "x"]},
    }
    typed = typed_sweep(data, name="t")
    assert typed["where"] == {} and typed["budget"] == {
        "trials_per_cell": 1,
        "max_retries": 2,
        "check": None,
        "tune_at": None,
    }
    assert typed["base"] == ["data.root=${oc.env:HOME}"]
    assert typed["search"]["model.width"]["step"] == 2 and isinstance(
        typed["search"]["model.width"]["step"], int
    )
    assert typed["search"]["model.width"]["low"] == 1.0 and typed["factors"]["seed"] == [1, 2.5, None, "x"]


def test_errors_from_a_sweep_file_name_the_file(tmp_path: Path) -> None:
    # load_sweep says which file to fix
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(_with(budget={"trial_per_cell": 2})))
    with pytest.raises(ConfigError) as info:
        load_sweep(str(path))
    assert "unknown key 'trial_per_cell' in budget — did you mean 'trials_per_cell'?" in str(info.value)
    assert str(info.value).endswith(f"(in {path})")


def test_a_sweep_file_that_is_not_a_mapping_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="the sweep file must be a mapping of sections, got list"):
        parse_sweep(["factors"], name="bad")  # type: ignore[arg-type]


# --- overrides ---
# The command line's part of a sweep: Hydra overrides, a photo folder, a class map, derived data sizes.
SPEC = parse_sweep(
    {
        "factors": {"strategy": ["linear_probe", "full_finetune"], "data.n_per_class": [4, 8]},
        "search": {"optimizer.lr": {"low": 1e-3, "high": 0.1, "log": True}},
        "budget": {"trials_per_cell": 2},
    },
    name="t",
)


def test_overrides_go_after_base_and_before_the_factors() -> None:
    # the command line extends the base; the cell's factor values are applied after it
    spec = with_overrides(SPEC, ("backbone=resnet18", "data.resolution=64"))
    overrides = cell_overrides(spec, expand_cells(spec)[0])
    assert overrides[:2] == ["backbone=resnet18", "data.resolution=64"]
    assert overrides[2:] == ["strategy=linear_probe", "data.n_per_class=4"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data.n_per_class=3", "a factor of this sweep"),
        ("optimizer.lr=0.1", "which this sweep tunes"),
        ("trainer.epochs", "must look like key=value"),
    ],
)
def test_overrides_that_would_fight_the_sweep_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        with_overrides(SPEC, (text,))


def test_a_class_map_adds_as_is_with_its_map() -> None:
    spec = with_photo_folder(SPEC, "/photos", "{ants: [ant], bees: [bee]}")
    assert dict(spec.factors)["strategy"] == ("linear_probe", "full_finetune", "as_is")
    as_is = next(c for c in expand_cells(spec) if c.get("strategy") == "as_is")
    assert "strategy.class_map={ants: [ant], bees: [bee]}" in cell_overrides(spec, as_is)
    assert "data.root=/photos" in spec.overrides


@pytest.mark.parametrize(
    ("smallest", "sizes"),
    [
        (97, (5, 20, None)),
        (9, (None,)),
        (10, (5, None)),
        (200, (5, 20, 80, None)),
        (1000, (5, 20, 80, 320, None)),
    ],
)
def test_data_sizes_step_up_to_all_of_the_smallest_class(smallest: int, sizes: tuple[Any, ...]) -> None:
    # about x4 apart, each at most half the smallest class, then all of it (None)
    assert derive_sizes(smallest) == sizes


def test_changed_overrides_are_refused_on_a_resumed_study(write_sweep: SweepWriter, study_dir: Path) -> None:
    # the overrides are part of the study's definition: the same ones resume, others are refused
    sweep = str(write_sweep("ovr", factors={"data.n_per_class": [4]}, final={"seeds": [1]}))
    assert sweep_main(["--sweep", sweep, "trainer.epochs=1"]) == 0
    assert sweep_main(["--sweep", sweep, "trainer.epochs=1"]) == 0  # resumes: nothing to do
    with pytest.raises(
        ConfigError, match=r"command-line overrides \[trainer\.epochs=1\], not \[trainer\.epochs=2\]"
    ):
        sweep_main(["--sweep", sweep, "trainer.epochs=2"])
    with pytest.raises(ConfigError, match="command-line overrides"):
        sweep_main(["--sweep", sweep])


def _photo_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", 14), ("val", 4)):
        for index, name in enumerate(("ants", "bees")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 80, (20, 20, 3)) + 120 * index
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root


def test_data_runs_the_photo_protocol_on_a_folder(
    write_sweep: SweepWriter, study_dir: Path, reader: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # --data points the sweep at the folder, sizes come from it, --class-map adds as_is
    folder = _photo_folder(study_dir / "photos")
    sweep = write_sweep(
        "photos_tiny",
        base=["data=imagefolder", "data.resolution=16", "trainer=quick", "trainer.count_flops=false"],
        factors={"strategy": ["linear_probe"], "data.n_per_class": ["auto"]},
        budget={"trials_per_cell": 0},
        final={"seeds": [1]},
    )
    code = sweep_main(
        ["--sweep", str(sweep), "--data", str(folder), "--class-map", "{ants: [ant], bees: [bee]}"]
    )
    assert code == 0
    out = capsys.readouterr().out
    # 14 per class, 3 carved for validation: 11 in the smallest class -> 5 and all
    assert "data sizes: 5, all per class" in out and "has 11 training images" in out
    finals = reader("photos_tiny").children("final")
    cells = sorted((r.data.params["strategy"], r.data.params["n_per_class"]) for r in finals)
    assert cells == [("as_is", "5"), ("as_is", "all"), ("linear_probe", "5"), ("linear_probe", "all")]
    assert all(r.data.params["data_root"] == str(folder.resolve()) for r in finals)
    assert all(r.data.tags["tuned_from_trial"] == "-1" for r in finals)  # no tuning: the defaults
    # readable run names ("all", not "data.n_per_class=null"); no "tune 0/0" when nothing is tuned
    assert sorted(r.info.run_name for r in finals) == [
        "as_is n=5 seed=1", "as_is n=all seed=1", "linear_probe n=5 seed=1", "linear_probe n=all seed=1"
    ]  # fmt: skip
    assert "tune 0/" not in out
