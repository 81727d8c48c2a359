"""The command line's part of a sweep: Hydra overrides, a photo folder, a class map, derived data sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tlbench.commands.sweep import main as sweep_main
from tlbench.errors import ConfigError
from tlbench.sweep.cells import cell_overrides, expand_cells
from tlbench.sweep.loader import parse_sweep
from tlbench.sweep.overrides import derive_sizes, with_overrides, with_photo_folder

from .conftest import SweepWriter

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
