"""Study reports: MLflow runs -> tidy table -> summary, recommendation, figures -> Markdown/HTML/LaTeX.

``build`` (orchestration) touches the outside world; ``tables`` (the trials table and the tables over
it), ``stats``, ``recommend`` (paired comparisons, the rule, learning curves), the figures' info and
the ``sections`` (Methods included) are pure functions of the table; drawing (``figures``) and
``render`` only turn their results into files.

Public: :func:`build_report` (the report) and :func:`recommended_arm` (the arm it recommends, with the
configuration its final runs ran: what ``tlbench export`` retrains).
"""

from __future__ import annotations

from tlbench.report.build import ReportResult, build_report, recommended_arm
from tlbench.report.recommend import FinalRun, RecommendedArm

__all__ = ["FinalRun", "RecommendedArm", "ReportResult", "build_report", "recommended_arm"]
