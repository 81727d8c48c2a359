"""The strategy registry is the one definition: the config enum, the YAML group and the report agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tlbench.config.schema import StrategyName
from tlbench.report.draw import STRATEGY_STYLE
from tlbench.report.formatting import STRATEGY_ORDER
from tlbench.strategies import STRATEGIES, UNTRAINED, strategy

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
