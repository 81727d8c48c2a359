"""Checking a sweep against the config tree: a searched key its strategy ignores is refused at load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tlbench.errors import ConfigError
from tlbench.sweep.check import check_against_config
from tlbench.sweep.loader import load_sweep

BASE = ["data=synthetic", "trainer=quick", "data.samples_per_class=20", "trainer.count_flops=false"]
LR = {"optimizer.lr": {"low": 1e-4, "high": 0.1, "log": True}}
L2 = {"strategy.probe.l2": {"low": 1e-6, "high": 1.0, "log": True}}


def _sweep(tmp_path: Path, **sections: Any) -> Path:
    path = tmp_path / "mine.yaml"
    body = {"base": BASE, "budget": {"trials_per_cell": 2}, "final": {"seeds": [1]}, **sections}
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.mark.parametrize(
    ("sections", "strategy", "key"),
    [
        # the L-BFGS probe has no learning rate: searching one spends every trial on the same model
        (
            {"factors": {"strategy": ["linear_probe", "full_finetune"]}, "search": LR},
            "linear_probe",
            "optimizer.lr",
        ),
        # a strategy without a probe never reads strategy.probe.*
        ({"factors": {"strategy": ["scratch"]}, "search": L2}, "scratch", "strategy.probe.l2"),
        # the strategy may come from the base instead of a factor
        ({"base": [*BASE, "strategy=full_finetune"], "search": L2}, "full_finetune", "strategy.probe.l2"),
        # only the cell that searches it is refused: search_where
        (
            {
                "factors": {"strategy": ["partial", "linear_probe"]},
                "search_where": {"strategy=linear_probe": LR},
            },
            "linear_probe",
            "optimizer.lr",
        ),
    ],
)
def test_a_searched_key_the_strategy_ignores_is_refused(
    tmp_path: Path, sections: dict[str, Any], strategy: str, key: str
) -> None:
    # one line naming the strategy, the key and the file, before any study exists
    path = _sweep(tmp_path, **sections)
    with pytest.raises(ConfigError) as info:
        check_against_config(load_sweep(str(path)))
    message = str(info.value)
    assert f"strategy {strategy} ignores '{key}'" in message and str(path) in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "sections",
    [
        # a probe trained by SGD does read the learning rate
        {
            "factors": {"strategy": ["linear_probe"]},
            "where": {"strategy=linear_probe": ["strategy.probe.solver=sgd"]},
            "search": LR,
        },
        # lp_ft reads both: its probe's L2 and its fine-tune's learning rate
        {"factors": {"strategy": ["lp_ft"]}, "search": {**LR, **L2}},
        # each strategy searching what it uses
        {
            "factors": {"strategy": ["linear_probe", "full_finetune"]},
            "search_where": {"strategy=linear_probe": L2, "strategy=full_finetune": LR},
        },
    ],
)
def test_searched_keys_the_strategy_reads_are_accepted(tmp_path: Path, sections: dict[str, Any]) -> None:
    # the refusal is specific: these compose and pass
    assert check_against_config(load_sweep(str(_sweep(tmp_path, **sections)))).tracking.enabled


def test_lora_on_layers_it_cannot_adapt_is_refused_before_anything_runs(tmp_path: Path) -> None:
    # depthwise convolutions take no LoRA adapter: the cell fails at load, naming the cell and the layer
    sections = {
        "factors": {"strategy": ["lora", "full_finetune"]},
        "where": {"strategy=lora": ["strategy.lora.targets=[conv_dw]"]},
        "search": LR,
    }
    with pytest.raises(ConfigError) as info:
        check_against_config(load_sweep(str(_sweep(tmp_path, **sections))))
    assert "cell strategy=lora" in str(info.value) and "'conv_dw' matches no adaptable layer" in str(
        info.value
    )
