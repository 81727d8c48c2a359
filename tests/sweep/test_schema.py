"""The sweep file schema: unknown keys and wrong types are one line naming the key path (issue 13, part 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tlbench.errors import ConfigError
from tlbench.sweep.loader import load_sweep, parse_sweep
from tlbench.sweep.schema import typed_sweep

from .test_spec import GOOD


def _with(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


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
