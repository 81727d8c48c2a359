"""Study reports: MLflow runs -> tidy table -> summary, recommendation, figures -> Markdown/HTML/LaTeX.

collect (store -> table) and build (orchestration) touch the outside world; summarize, recommend and
figures_data are pure functions of the table; draw and render only turn their results into files.

Public: :func:`build_report` (the report) and :func:`recommended_arm` (the arm it recommends, with the
configuration its final runs ran: what ``tlbench export`` retrains).
"""

from __future__ import annotations

from tlbench.report.build import ReportResult, build_report, recommended_arm
from tlbench.report.recommend import FinalRun, RecommendedArm

__all__ = ["FinalRun", "RecommendedArm", "ReportResult", "build_report", "recommended_arm"]
