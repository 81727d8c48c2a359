"""Everything a report says, computed before any text is written (the sections only arrange it)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from tlbench.report.figure_info import CostUnit, FigureInfo
from tlbench.report.outlook import Outlook
from tlbench.report.paired import SizeComparison
from tlbench.report.recommend import Recommendation

# info, (png, svg) paths relative to the report when drawn, display width in CSS pixels
DrawnFigure = tuple[FigureInfo, tuple[str, str] | None, int]


@dataclass(frozen=True)
class ReportInputs:
    """The study, its tables and figures: all a report states, gathered before it is written."""

    study: str
    sweep: str | None
    experiment_id: str
    parent_run_id: str | None
    tracking_uri: str
    trials: pd.DataFrame
    summary: pd.DataFrame
    recommendations: list[Recommendation]
    tolerance: float
    unit: CostUnit
    figures: list[DrawnFigure]
    parent_params: dict[str, str] = field(default_factory=dict)
    extra_parents: int = 0
    sweep_yaml: str | None = None
    race_json: str | None = None  # the parent run's race.json, when the finals were raced
    report_software: dict[str, str] = field(default_factory=dict)
    comparisons: list[SizeComparison] = field(default_factory=list)  # paired, per data size
    outlook: Outlook | None = None  # learning curves and the recommendation with twice the labels
