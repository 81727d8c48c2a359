"""The strategy registry is the one definition: the config enum, the YAML group and the report agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tlbench.config.schema import StrategyName
from tlbench.report.figures import STRATEGY_STYLE
from tlbench.report.render import STRATEGY_ORDER
from tlbench.strategies import STRATEGIES, UNTRAINED, ignored_keys, strategy

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
    ],
)
def test_ignored_keys(name: str, solver: str, key: str, ignored: bool) -> None:
    # a searched key is refused exactly when one of the strategy's ignored prefixes starts it
    prefixes = ignored_keys(name, probe_solver=solver)
    assert any(key.startswith(p) for p in prefixes) is ignored
