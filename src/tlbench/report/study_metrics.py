"""The study summary as a few MLflow parent-run metrics and tags (pure; ``tracking`` does the logging).

Few and readable, so MLflow's chart view of the parent run shows the verdict rather than ~80 one-bar
charts (every arm's numbers are in the report, results.csv and summary.tex, logged beside them).
``<size>`` is ``n20``, ``n100`` … or ``nall``:

- ``recommended/<size>/test_acc``: mean test accuracy over the final seeds of the arm the report
  recommends at that size; ``recommended/<size>/test_acc_low95`` and ``…/test_acc_high95`` the ends of
  its 95% Student-t interval, clipped to [0, 1] (only with two or more seeds); ``…/seeds``;
  ``…/device_seconds``: its mean device-seconds per run (seconds, so a CPU study's cost does not read
  0.00 in the UI; ``cost/device_hours`` × 3600);
- ``study/trials``, ``study/trials_failed`` (collapsed ones included), ``study/device_hours``: totals.

Tags: ``report.recommended/<size>`` and ``report.best/<size>`` (arm names), ``report.verdict/<size>``
(one plain sentence with the numbers), ``report.tolerance``, ``report.cost_unit``,
``report.paired_basis/<size>`` (``per_image`` or ``binomial``).
"""

from __future__ import annotations

import math

import pandas as pd

from tlbench.report.formatting import size_slug
from tlbench.report.recommend import Recommendation, verdict_sentence
from tlbench.report.summarize import Totals


def parent_metrics(
    recommendations: list[Recommendation], trials: pd.DataFrame, totals: Totals
) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for rec in recommendations:
        key, r = f"recommended/{size_slug(rec.n_per_class)}", rec.recommended
        metrics[f"{key}/test_acc"] = r.acc
        if r.acc_ci is not None:
            metrics[f"{key}/test_acc_low95"] = max(0.0, r.acc - r.acc_ci)
            metrics[f"{key}/test_acc_high95"] = min(1.0, r.acc + r.acc_ci)
        metrics[f"{key}/seeds"] = float(r.seeds)
        metrics[f"{key}/device_seconds"] = 3600 * r.cost
    metrics["study/trials"] = float(len(trials))
    metrics["study/trials_failed"] = float((trials["outcome"] == "failed").sum())
    metrics["study/device_hours"] = totals.device_hours
    return {k: v for k, v in metrics.items() if not math.isnan(v)}


def parent_tags(recommendations: list[Recommendation], *, tolerance: float, cost_unit: str) -> dict[str, str]:
    tags = {"report.tolerance": f"{tolerance:g}", "report.cost_unit": cost_unit}
    for rec in recommendations:
        slug = size_slug(rec.n_per_class)
        tags[f"report.recommended/{slug}"] = rec.recommended.strategy
        tags[f"report.best/{slug}"] = rec.best.strategy
        tags[f"report.verdict/{slug}"] = verdict_sentence(rec, rec.recommended, unit=cost_unit)
        if rec.comparison is not None:
            tags[f"report.paired_basis/{slug}"] = rec.comparison.basis
    return tags
