"""The strategy registry is the one definition: the config enum, the YAML group and the report agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tlbench.config import load_config
from tlbench.config.schema import StrategyName
from tlbench.errors import ConfigError
from tlbench.report.draw import STRATEGY_STYLE
from tlbench.report.formatting import STRATEGY_ORDER
from tlbench.strategies import L2_SP, STRATEGIES, UNTRAINED, ignored_keys, strategy

CONF = Path(__file__).resolve().parents[1] / "conf" / "strategy"


def test_the_config_enum_names_exactly_the_registered_strategies() -> None:
    # Hydra validates strategy.name against the enum: it must not accept an undefined strategy
    assert {n.value for n in StrategyName} == set(STRATEGIES)


def test_every_registered_strategy_has_a_config_file_naming_it() -> None:
    # conf/strategy/<name>.yaml selects strategy.name=<name>, one file per registered strategy
    names = {p.stem: yaml.safe_load(p.read_text())["strategy"]["name"] for p in CONF.glob("*.yaml")}
    assert {k: v for k, v in names.items() if k in STRATEGIES} == {n: n for n in STRATEGIES}


def test_the_report_reads_order_and_style_from_the_registry() -> None:
    # figures and tables order and draw strategies as the registry says, each in its own style
    assert tuple(STRATEGIES) == STRATEGY_ORDER
    assert len(set(STRATEGY_STYLE.values())) == len(STRATEGIES)


def test_lookup_accepts_the_enum_and_rejects_unknown_names() -> None:
    # the enum member and its value give the same entry; an unknown name says which ones exist
    assert strategy(StrategyName.lp_ft) is strategy("lp_ft") and strategy("lp_ft").then_finetune
    with pytest.raises(ValueError, match="known as_is"):
        strategy("gradual")
    assert UNTRAINED == ("as_is",)


@pytest.mark.parametrize(
    ("name", "solver", "key", "ignored"),
    [
        ("linear_probe", "lbfgs", "optimizer.lr", True),  # L-BFGS has no learning rate
        ("linear_probe", "lbfgs", "strategy.probe.l2", False),  # its one hyperparameter
        ("linear_probe", "sgd", "optimizer.lr", False),  # the SGD probe trains at optimizer.lr
        ("linear_probe", "sgd", "strategy.probe.l2", True),
        ("full_finetune", "lbfgs", "strategy.probe.l2", True),  # no probe phase
        ("full_finetune", "lbfgs", "optimizer.lr", False),
        ("lp_ft", "lbfgs", "optimizer.lr", False),  # both phases' parameters matter
        ("lp_ft", "lbfgs", "strategy.probe.l2", False),
        ("as_is", "lbfgs", "optimizer.lr", True),  # trains nothing
        ("bitfit", "lbfgs", "optimizer.lr", False),  # biases and norms train at optimizer.lr
        ("bitfit", "lbfgs", "strategy.freeze_depth", True),  # chooses parameters by kind, not depth
        ("bitfit", "lbfgs", "strategy.lora.rank", True),  # no adapters
        ("bitfit", "lbfgs", "strategy.l2_sp", True),  # refused for bitfit (see below)
        ("lora", "lbfgs", "strategy.lora.rank", False),  # its own hyperparameters
        ("lora", "lbfgs", "optimizer.lr", False),
        ("lora", "lbfgs", "strategy.probe.l2", True),
        ("lora", "lbfgs", "strategy.l2_sp", True),
        ("full_finetune", "lbfgs", "strategy.lora.alpha", True),  # only lora reads strategy.lora.*
        ("full_finetune", "lbfgs", "strategy.l2_sp", False),  # L2-SP is an option of fine-tuning
        ("partial", "lbfgs", "strategy.l2_sp", False),
        ("lp_ft", "lbfgs", "strategy.l2_sp", False),
        ("scratch", "lbfgs", "strategy.l2_sp", True),  # no pretrained weights to stay near
        ("linear_probe", "sgd", "strategy.l2_sp", True),  # no backbone weight trains
    ],
)
def test_ignored_keys(name: str, solver: str, key: str, ignored: bool) -> None:
    # a searched key is refused exactly when one of the strategy's ignored prefixes starts it
    prefixes = ignored_keys(name, probe_solver=solver)
    assert any(key.startswith(p) for p in prefixes) is ignored


def test_l2_sp_is_an_option_of_the_fine_tuning_strategies_only() -> None:
    # the registry's L2-SP set is exactly the strategies that fine-tune pretrained backbone weights
    assert set(L2_SP) == {"full_finetune", "partial", "lp_ft"}


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("scratch", "starts from random weights"),
        ("linear_probe", "trains no pretrained weight"),
        ("bitfit", "trains only biases and normalisation parameters"),
        ("lora", "keeps the pretrained weights frozen"),
    ],
)
def test_l2_sp_elsewhere_is_one_line_at_composition(name: str, reason: str) -> None:
    # strategy.l2_sp > 0 where nothing pretrained fine-tunes fails before anything is built, saying why
    # and which strategies take it
    with pytest.raises(ConfigError) as error:
        load_config([f"strategy={name}", "strategy.l2_sp=0.1"])
    message = str(error.value)
    assert "\n" not in message and reason in message
    assert "use it with partial, lp_ft, full_finetune, or set strategy.l2_sp=0" in message


@pytest.mark.parametrize("name", ["full_finetune", "partial", "lp_ft"])
def test_l2_sp_composes_on_fine_tuning(name: str) -> None:
    # the fine-tuning strategies take it; 0 (the default) is off everywhere
    assert load_config([f"strategy={name}", "strategy.l2_sp=0.1"]).strategy.l2_sp == 0.1
    assert load_config(["strategy=scratch"]).strategy.l2_sp == 0.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("strategy.l2_sp=-1", "strategy.l2_sp must be a finite value >= 0"),  # a negative pull
        ("strategy.lora.rank=0", "strategy.lora.rank must be >= 1"),
        ("strategy.lora.dropout=1.0", "strategy.lora.dropout must be in [0, 1)"),
        ("strategy.lora.targets=[]", "strategy.lora.targets must be null"),  # empty list: nothing to adapt
    ],
)
def test_bad_values_are_refused_at_composition(override: str, message: str) -> None:
    # each bad value is one line naming the key
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(["strategy=lora", override])
