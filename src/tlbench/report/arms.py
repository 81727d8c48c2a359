"""What the report compares: strategies, or strategy × the other factors a study varies.

A study that crosses ``data.resolution`` or ``backbone`` with the strategies (the cheapest knobs users
have) must not pool its runs per strategy: each combination is an arm of its own, labelled
``"<strategy>, <value>"`` (``linear_probe, 224px``), which every table, figure and the recommendation
then treat as a strategy (figures keep the strategy's colour for its arms).
"""

from __future__ import annotations

import pandas as pd

from tlbench.strategies import UNTRAINED

ARM_FACTORS = (("backbone", "{}"), ("resolution", "{}px"))  # column, how a value is labelled


def varying_factors(trials: pd.DataFrame) -> list[str]:
    """The arm factors that take more than one value among the trained final runs."""
    finals = trials[(trials["role"] == "final") & ~trials["strategy"].isin(UNTRAINED)]
    return [c for c, _ in ARM_FACTORS if c in finals and finals[c].dropna().astype(str).nunique() > 1]


def label_arms(trials: pd.DataFrame) -> pd.DataFrame:
    """``trials`` with ``strategy`` relabelled per arm when the study varies an arm factor; the plain
    strategy stays in ``strategy_name``. Unchanged (no copy) when nothing varies."""
    varying = varying_factors(trials)
    if not varying:
        return trials
    out = trials.copy()
    out["strategy_name"] = out["strategy"]
    formats = dict(ARM_FACTORS)
    for column in varying:
        suffix = out[column].map(lambda v, f=formats[column]: "" if pd.isna(v) else ", " + f.format(v))
        out["strategy"] = (out["strategy"].astype(str) + suffix.astype(str)).astype("string")
    return out
