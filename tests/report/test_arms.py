"""Arms: strategy x the resolution or backbone a study varies, so runs are never pooled across them."""

from __future__ import annotations

import pandas as pd

from tlbench.report.arms import label_arms
from tlbench.report.formatting import sorted_strategies


def _trials(resolutions: list[int]) -> pd.DataFrame:
    n = len(resolutions)
    return pd.DataFrame(
        {
            "role": ["final"] * n,
            "strategy": pd.array(["linear_probe", "scratch"] * (n // 2), dtype="string"),
            "backbone": ["tf_efficientnet_lite0"] * n,
            "resolution": resolutions,
        }
    )


def test_a_study_at_one_resolution_keeps_plain_strategies() -> None:
    trials = _trials([224, 224, 224, 224])
    assert label_arms(trials) is trials


def test_varying_resolution_makes_each_combination_an_arm() -> None:
    # 2 strategies x 2 resolutions -> 4 arms, the plain strategy kept alongside
    labelled = label_arms(_trials([64, 64, 224, 224]))
    assert list(labelled["strategy"]) == [
        "linear_probe, 64px",
        "scratch, 64px",
        "linear_probe, 224px",
        "scratch, 224px",
    ]
    assert list(labelled["strategy_name"]) == ["linear_probe", "scratch"] * 2
    # arms sort with their strategy (linear_probe before scratch), then by label
    assert sorted_strategies(labelled["strategy"])[:2] == ["linear_probe, 224px", "linear_probe, 64px"]
