from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tlbench.config import compose, load_config
from tlbench.config.compose import config_dir, packaged_dir, typed_mapping
from tlbench.config.schema import DatasetName, RunConfig, StrategyName, WeightsSource
from tlbench.errors import ConfigError

CONF = config_dir()


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


# Overrides that make an option composable on its own (it needs a value the defaults do not give).
_NEEDS = {
    ("data", "imagefolder"): ["data.root=/tmp"],  # an existing folder: checked at composition
    ("strategy", "as_is"): ["strategy.class_map={a: [ant]}"],
}


@pytest.mark.parametrize(
    ("group", "option"),
    [
        (g, o)
        for g in ("backbone", "data", "strategy", "optimizer", "schedule", "trainer", "tracking")
        for o in _options(g)
    ],
)
def test_every_group_option_composes(group: str, option: str) -> None:
    # each option of each group composes onto the typed schema
    cfg = load_config([f"{group}={option}", *_NEEDS.get((group, option), [])])
    assert isinstance(cfg, RunConfig)


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_composes(experiment: str, tmp_path: Path) -> None:
    # experiment presets override groups and values and still validate (a photo folder they name
    # must exist at composition: an existing one stands in, as on a checkout without ../shared)
    needs_root = "root:" in (CONF / "experiment" / f"{experiment}.yaml").read_text()
    cfg = load_config([f"experiment={experiment}", *([f"data.root={tmp_path}"] if needs_root else [])])
    assert isinstance(cfg, RunConfig)


def test_photo_data_brings_its_trainer_unless_one_is_chosen() -> None:
    # data=imagefolder: batch 16, at most 150 steps with early stopping (conf/trainer/photo.yaml)
    photo = load_config(["data=imagefolder", "data.root=/tmp"]).trainer
    assert (photo.batch_size, photo.min_steps, photo.early_stopping, photo.patience) == (16, 150, True, 3)
    # a trainer named on the command line wins, in either order; a single key overrides as usual
    for overrides in (["trainer=quick", "data=imagefolder"], ["data=imagefolder", "trainer=quick"]):
        quick = load_config([*overrides, "data.root=/tmp"]).trainer
        assert (quick.batch_size, quick.early_stopping) == (32, False)
    assert load_config(["data=imagefolder", "data.root=/tmp", "trainer.batch_size=8"]).trainer.batch_size == 8
    # other data keep the default trainer
    assert load_config(["data=digits"]).trainer.early_stopping is False


def test_a_missing_photo_folder_fails_at_the_commands_edge_before_torch_loads(tmp_path: Path) -> None:
    # the config composes (a folder is the world, not a value); the commands' check names it in one
    # line before torch is imported (which takes 10-30 s)
    code = (
        "import sys\n"
        "from tlbench.commands.overrides import check_paths\n"
        "from tlbench.config import load_config\n"
        "from tlbench.errors import TlbenchError\n"
        "try:\n"
        f"    check_paths(load_config(['data=imagefolder', 'data.root={tmp_path}/nope']))\n"
        "except TlbenchError as exc:\n"
        "    print(exc)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    message, torch_loaded = out.strip().splitlines()
    assert f"data.root={tmp_path}/nope is not an existing folder" in message
    assert torch_loaded == "False"


def test_defaults_are_the_documented_ones() -> None:
    # the default trial: embedded lite0, digits, linear probe
    cfg = load_config()
    assert cfg.backbone.name == "tf_efficientnet_lite0"
    assert cfg.backbone.weights == WeightsSource.embedded
    assert cfg.data.name == DatasetName.digits
    assert cfg.strategy.name == StrategyName.linear_probe


def test_overrides_are_typed() -> None:
    # overrides arrive converted to the schema's types
    cfg = load_config(
        ["data.n_per_class=10", "optimizer.lr=0.02", "strategy=partial", "strategy.freeze_depth=3"]
    )
    assert cfg.data.n_per_class == 10
    assert cfg.optimizer.lr == pytest.approx(0.02)
    assert cfg.strategy.freeze_depth == 3


def test_mapping_override_replaces_instead_of_merging(tmp_path: Path) -> None:
    # strategy.class_map=... replaces the preset's mapping entirely
    cfg = load_config(
        ["experiment=hymenoptera_as_is", f"data.root={tmp_path}", "strategy.class_map={ants: [ant]}"]
    )
    assert cfg.strategy.class_map == {"ants": ["ant"]}


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["data.n_per_clas=3"], "did you mean 'data.n_per_class'"),  # typo gets a suggestion
        (["strategy=foo"], "Available options in 'strategy'"),  # unknown option lists the valid ones
        (["data.n_per_class=abc"], "could not be converted to Integer"),  # wrong type
        (["strategy.name=bogus"], "expected one of"),  # bad enum value
        (["data=imagefolder"], "data.root"),  # missing mandatory value says which key
        (["strategy=as_is"], "class_map"),
        (["data.n_per_class=0"], "data.n_per_class must be >= 1"),
        (["strategy=partial", "strategy.freeze_depth=null"], "strategy.freeze_depth"),
        (["optimizer.lr=-1"], "optimizer.lr"),
        (["trainer.epochs=0"], "trainer.epochs"),
        (["trainer.precision=fp8"], "trainer.precision"),
        (["strategy.class_map=3"], "takes a mapping"),
        (["schedule.milestones=[0.8,0.2]"], "schedule.milestones"),
        (["backbone.weights=file"], "backbone.weights_path"),
        (["seed=4294967296"], "seed must be in [0, 2**32)"),  # what the seeded RNGs accept
        (
            ["data.split_seed=-1"],
            "data.split_seed must be in [0, 4294967296), got -1",
        ),  # was numpy's ValueError
    ],
)
def test_bad_config_fails_at_composition_with_a_clear_message(overrides: list[str], fragment: str) -> None:
    # every bad key or value is a ConfigError (a one-line user message), never a library traceback
    with pytest.raises(ConfigError) as info:
        load_config(overrides)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("override", "meant"),
    [
        ("freeze_depth=3", "strategy.freeze_depth"),  # a key at the wrong level: where it lives
        ("lr=0.1", "optimizer.lr"),
        ("min_steps=50", "trainer.min_steps"),
        ("strategy.freez_depth=3", "strategy.freeze_depth"),  # a typo among its siblings
    ],
)
def test_a_misplaced_key_is_pointed_to_without_a_plus_hint(override: str, meant: str) -> None:
    # Hydra's "+key=value" hint would only fail later on the typed schema: it is not passed on
    with pytest.raises(ConfigError) as info:
        load_config([override])
    assert f"did you mean '{meant}'" in str(info.value)
    assert "+" not in str(info.value)
    assert "\n" not in str(info.value)


def test_config_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a TLBENCH_CONFIG_DIR without config.yaml is reported, not silently ignored
    monkeypatch.setenv("TLBENCH_CONFIG_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match=r"no config\.yaml"):
        load_config()


def test_config_dir_env_points_at_another_conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # TLBENCH_CONFIG_DIR replaces the packaged conf/: a copy with another default seed is used
    other = tmp_path / "my_conf"
    shutil.copytree(CONF, other)
    config = other / "config.yaml"
    config.write_text(config.read_text().replace("\nseed: 0\n", "\nseed: 11\n"))
    monkeypatch.setenv("TLBENCH_CONFIG_DIR", str(other))
    assert config_dir() == other
    assert load_config().seed == 11
    # a relative path is taken from the working directory (Hydra itself accepts only absolute ones)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TLBENCH_CONFIG_DIR", "my_conf")
    assert load_config().seed == 11


@dataclass
class _Toy:
    epochs: int = field(default=1, metadata={"expect": "an integer >= 1"})
    tags: list[str] = field(default_factory=list)


def test_typed_mapping_errors_name_the_key_what_it_expects_and_what_it_got() -> None:
    # the one translator of OmegaConf errors for a user's YAML mapping (the sweep file uses it)
    assert typed_mapping(_Toy, {"epochs": 3}) == {"epochs": 3, "tags": []}
    with pytest.raises(ConfigError, match=r"^epochs must be an integer >= 1, got 'many'$"):
        typed_mapping(_Toy, {"epochs": "many"})
    with pytest.raises(ConfigError, match=r"^unknown key 'epoch' in the file — did you mean 'epochs'\?$"):
        typed_mapping(_Toy, {"epoch": 2})
    with pytest.raises(ConfigError, match=r"^unknown key 'x' in my file \(allowed: epochs, tags\)$"):
        typed_mapping(_Toy, {"x": 2}, root="my file")


REPO_ROOT = Path(__file__).resolve().parents[2]


# --- the packaged conf/ and sweeps/ (config.compose.packaged_dir) ---
@pytest.mark.parametrize("name", ["conf", "sweeps"])
def test_source_tree_links_to_the_top_level_folders(name: str) -> None:
    # in the source tree the package's folder is a link to the top-level one (edits apply at once)
    inside = REPO_ROOT / "src" / "tlbench" / compose.PACKAGED[name]
    assert inside.is_symlink() and inside.resolve() == REPO_ROOT / name
    assert packaged_dir(name, env="X") == REPO_ROOT / name


def test_unknown_folder_is_a_programming_error() -> None:
    # only conf and sweeps ship with the package
    with pytest.raises(ValueError, match="one of conf, sweeps"):
        packaged_dir("docs", env="X")


def test_missing_folder_says_to_reinstall_or_set_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    # an install without its package data gets an actionable message, not a Hydra traceback
    monkeypatch.setitem(compose.PACKAGED, "conf", "_not_there")
    with pytest.raises(ConfigError, match=r"reinstall tlbench \(pip install \.\), or set TLBENCH_CONFIG_DIR"):
        packaged_dir("conf", env="TLBENCH_CONFIG_DIR")
