"""``tlbench train`` and ``tlbench config``: the commands that take Hydra overrides of ``conf/``, with a
``--help`` read from ``conf/`` and the schema (it cannot drift from them) and a check of the paths a
configuration names, both before torch loads (17-27 s on a loaded 2-core machine)."""

from __future__ import annotations

import dataclasses
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import yaml

from tlbench.config import load_config
from tlbench.config.compose import config_dir
from tlbench.config.schema import DatasetName, RunConfig, WeightsSource, as_plain_dict
from tlbench.errors import ConfigError, DataError

DATASETS_ENV = "TLBENCH_DATASETS"  # where the experiment presets look for their photos (see conf/experiment)
_WIDTH = 100


def _describe(path: Path) -> str:
    """An option's one-line description: its file's leading comment's first sentence, else its values."""
    comment = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text and not text.startswith("@package"):
            comment.append(text)
    if comment:
        return " ".join(comment).split(". ")[0].rstrip(".")
    values = yaml.safe_load(path.read_text()) or {}
    settings = [f"{k}={v}" for k, v in values.items() if k != "name" and not isinstance(v, dict | list)]
    return ", ".join(settings) or "(no settings of its own)"


def group_options() -> dict[str, list[tuple[str, str]]]:
    """Every config group in ``conf/`` with its options and their one-line descriptions."""
    root = config_dir()
    return {
        group.name: [(path.stem, _describe(path)) for path in sorted(group.glob("*.yaml"))]
        for group in sorted(p for p in root.iterdir() if p.is_dir())
    }


def usage(command: str) -> str:
    """``--help`` of ``tlbench train`` / ``tlbench config``: how overrides work, every group, option, key."""
    does = {
        "train": "Run one trial (data, model, fit, validation, test, cost) and track it in MLflow "
        "(experiment 'tlbench'; MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here).",
        "config": "Print the composed, validated configuration a trial with these overrides would use "
        "(every key and its value), as YAML. Nothing runs.",
    }[command]
    lines = [f"usage: tlbench {command} [KEY=VALUE ...]", "", *textwrap.wrap(does, _WIDTH), ""]
    lines += [
        "Arguments are Hydra overrides of conf/, applied left to right (the last one wins):",
        "  GROUP=OPTION       choose a config group's option          strategy=lp_ft",
        "  KEY=VALUE          set one value (typed, checked)           data.n_per_class=20 optimizer.lr=3e-4",
        "  KEY=null           unset a value                            data.resolution=null",
        "  KEY='{a: [b]}'     a mapping or list, quoted for the shell  strategy.class_map='{ants: [ant]}'",
        "  experiment=NAME    a preset of groups and values, applied after the groups",
        "A misspelt key, an unknown option or a bad value is one line naming it, before anything runs.",
        "",
        "config groups (* = the default) and their options:",
    ]
    entries = yaml.safe_load((config_dir() / "config.yaml").read_text()).get("defaults", [])
    defaults = {k: str(v) for entry in entries if isinstance(entry, dict) for k, v in entry.items()}
    sections = {f.name: getattr(RunConfig(), f.name) for f in dataclasses.fields(RunConfig)}
    keys = {  # group -> the keys its schema accepts (nested settings as strategy.probe.*)
        group: [
            f"{group}.{f.name}" + (".*" if dataclasses.is_dataclass(getattr(section, f.name)) else "")
            for f in dataclasses.fields(section)
        ]
        for group, section in sections.items()
        if dataclasses.is_dataclass(section)
    }
    for group, options in group_options().items():
        lines.append(f"  {group}")
        width = max(len(name) for name, _ in options) + 1
        for name, description in options:
            mark = "*" if defaults.get(group) == name else " "
            shown = textwrap.shorten(description, _WIDTH - width - 6, placeholder=" ...")
            lines.append(f"    {name + mark:<{width}}  {shown}")
        if group in keys:
            wrapped = textwrap.wrap(", ".join(keys[group]), _WIDTH - 11)
            lines += [f"    keys: {wrapped[0]}", *(f"          {line}" for line in wrapped[1:])]
    lines += [
        "  seed               the trial's seed (data subset, initialisation, batches)",
        "",
        f"The photo presets in experiment/ read from ${DATASETS_ENV}/<name> (default ./datasets/<name>);",
        "data.root=FOLDER points any of them at your own copy.",
        "",
        "examples:",
        "  tlbench train data=digits strategy=linear_probe data.n_per_class=10",
        "  tlbench train data=imagefolder data.root=path/to/photos strategy=full_finetune",
        "  tlbench train strategy=partial strategy.freeze_depth=4 schedule=cosine optimizer=sgd",
        "  tlbench config strategy=lp_ft          # every key of that trial and its value",
    ]
    return "\n".join(lines)


def _preset_hint(overrides: Sequence[str]) -> str | None:
    """How to fix a path an experiment preset set (the command line did not name it), else None."""
    presets = [arg.split("=", 1)[1] for arg in overrides if arg.split("=", 1)[0] == "experiment"]
    if not presets or any(arg.split("=", 1)[0].lstrip("+~") == "data.root" for arg in overrides):
        return None
    where = os.environ.get(DATASETS_ENV)
    source = f"${DATASETS_ENV} ({where})" if where else f"${DATASETS_ENV}, unset, so ./datasets"
    return (
        f"experiment={presets[-1]} reads it from {source}: set {DATASETS_ENV} to the folder that holds "
        "the dataset, or pass data.root=FOLDER"
    )


def check_paths(cfg: RunConfig, *, overrides: Sequence[str] = ()) -> None:
    """The one-line error the data or model layer would raise later for a missing dataset folder
    (:class:`DataError`) or weights file (:class:`ConfigError`); ``overrides`` only say where it came from."""
    data, root = cfg.data, Path(cfg.data.root).expanduser() if cfg.data.root else None
    if data.name == DatasetName.imagefolder and root is not None and not root.is_dir():
        fix = _preset_hint(overrides) or (
            "point data.root at a folder of class sub-folders (root/<class>/<image>) or of split "
            "folders (root/train/<class>/<image>)"
        )
        raise DataError(f"data.root={cfg.data.root} is not an existing folder; {fix}")
    named = data.name in (DatasetName.fashion_mnist, DatasetName.cifar10)
    if named and root is not None and not root.exists() and not data.download:
        fallback = {
            DatasetName.fashion_mnist: "leave data.root unset to use /usr/share/datasets/fashion-mnist "
            "(Debian's dataset-fashion-mnist), or add data.download=true",
            DatasetName.cifar10: "point it at the folder holding cifar-10-batches-py, or add "
            "data.download=true",
        }[data.name]
        raise DataError(f"data.root={cfg.data.root} does not exist (data={data.name.value}); {fallback}")
    weights = cfg.backbone.weights_path
    if cfg.backbone.weights == WeightsSource.file and weights and not Path(weights).expanduser().is_file():
        raise ConfigError(
            f"backbone.weights_path={weights} not found: give the path of a .pth or .safetensors "
            "checkpoint (backbone.weights=file)"
        )


def train(argv: Sequence[str]) -> int:
    """``tlbench train k=v ...``: one trial with Hydra overrides, tracked in MLflow."""
    if {"-h", "--help"} & set(argv):
        print(usage("train"))
        return 0
    cfg = load_config(argv)
    check_paths(cfg, overrides=argv)  # a missing folder or file: one line now, not after torch loads
    from tlbench.run import train as run_trial  # heavy imports only once the config is known to be valid

    result = run_trial(cfg)
    width = max(len(k) for k in result.metrics)
    print(f"\nstatus: {result.status}")
    for key in sorted(result.metrics):
        print(f"  {key:<{width}}  {result.metrics[key]:.6g}")
    if result.run_id:
        print(f"MLflow run {result.run_id} in experiment '{cfg.tracking.experiment}' (browse: make ui)")
    if not result.completed:
        print(f"trial did not complete: {result.status}", file=sys.stderr)
        return 1
    return 0


def config(argv: Sequence[str]) -> int:
    """``tlbench config k=v ...``: print the composed, validated config as YAML."""
    if {"-h", "--help"} & set(argv):
        print(usage("config"))
        return 0
    cfg = load_config(argv)
    check_paths(cfg, overrides=argv)
    print(yaml.safe_dump(as_plain_dict(cfg), sort_keys=False), end="")
    return 0
