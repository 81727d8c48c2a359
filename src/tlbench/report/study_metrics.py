"""The study summary as MLflow parent-run metrics and tags (pure; ``tracking`` does the logging).

Names (``<size>`` is ``n20``, ``n100`` … or ``nall``):

- ``best/test_acc/<strategy>/<size>``: mean test accuracy over the final seeds of the tuned configuration
  (the summary table's number); ``best/test_acc_ci95/<strategy>/<size>`` its 95% CI half-width (only with
  two or more seeds); ``best/seeds/<strategy>/<size>``;
- ``best/device_hours/<strategy>/<size>``, ``best/train_flops/<strategy>/<size>``,
  ``best/params_trainable/<strategy>/<size>``: mean cost per final run;
- ``best/val_acc/<strategy>/<size>``: best validation accuracy among completed tuning trials;
- ``paired/diff/<strategy>/<size>``: paired difference in mean test accuracy to the best strategy of the
  size (same seeds, same test images; <= 0), ``paired/diff_low95/…`` and ``paired/diff_high95/…`` its 95%
  interval (not for the best itself), ``paired/p_best/…`` the probability of being the best,
  ``paired/detectable/…`` the difference detectable with 80% power at this test size;
- ``study/trials``, ``study/trials_<outcome>``, ``study/device_hours``, ``study/train_flops``: totals.

Tags: ``report.recommended/<size>`` and ``report.best/<size>`` (strategy names), ``report.tolerance``,
``report.cost_unit``, ``report.paired_basis/<size>`` (``per_image`` or ``binomial``).
"""

from __future__ import annotations

import math
import re

import pandas as pd

from tlbench.report.collect import OUTCOMES
from tlbench.report.formatting import size_slug
from tlbench.report.recommend import Recommendation
from tlbench.report.summarize import Totals, best_tuning_val

_UNSAFE = re.compile(r"[^\w\-. /]")  # MLflow metric names: alphanumerics, _ - . space and / only


def _key(kind: str, strategy: str, size: str, *, prefix: str = "best") -> str:
    # an arm label "linear_probe, 224px" (report.arms) becomes "linear_probe_224px"
    arm = _UNSAFE.sub("", strategy.replace(", ", "_"))
    return f"{prefix}/{kind}/{arm}/{size_slug(size)}"


_PAIRED = {
    "diff": "paired_diff", "diff_low95": "paired_diff_low", "diff_high95": "paired_diff_high",
    "p_best": "p_best", "detectable": "detectable_diff",
}  # fmt: skip


def parent_metrics(summary: pd.DataFrame, trials: pd.DataFrame, totals: Totals) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for _, row in summary.iterrows():
        strategy, size = str(row["strategy"]), str(row["n_per_class"])
        metrics[_key("test_acc", strategy, size)] = float(row["acc_mean"])
        if not math.isnan(float(row["acc_ci"])):
            metrics[_key("test_acc_ci95", strategy, size)] = float(row["acc_ci"])
        metrics[_key("seeds", strategy, size)] = float(row["seeds"])
        metrics[_key("device_hours", strategy, size)] = float(row["device_hours"])
        metrics[_key("train_flops", strategy, size)] = float(row["train_flops"])
        metrics[_key("params_trainable", strategy, size)] = float(row["trainable_params"])
        for kind, column in _PAIRED.items():
            if column in row.index and not pd.isna(row[column]):
                metrics[_key(kind, strategy, size, prefix="paired")] = float(row[column])
    for _, row in best_tuning_val(trials).iterrows():
        metrics[_key("val_acc", str(row["strategy"]), str(row["n_per_class"]))] = float(row["val_acc"])
    counts = trials["outcome"].value_counts()
    metrics["study/trials"] = float(len(trials))
    for outcome in OUTCOMES:
        metrics[f"study/trials_{outcome}"] = float(counts.get(outcome, 0))
    metrics["study/device_hours"] = totals.device_hours
    metrics["study/train_flops"] = totals.train_flops
    return {k: v for k, v in metrics.items() if not math.isnan(v)}


def parent_tags(recommendations: list[Recommendation], *, tolerance: float, cost_unit: str) -> dict[str, str]:
    tags = {"report.tolerance": f"{tolerance:g}", "report.cost_unit": cost_unit}
    for rec in recommendations:
        tags[f"report.recommended/{size_slug(rec.n_per_class)}"] = rec.recommended.strategy
        tags[f"report.best/{size_slug(rec.n_per_class)}"] = rec.best.strategy
        if rec.comparison is not None:
            tags[f"report.paired_basis/{size_slug(rec.n_per_class)}"] = rec.comparison.basis
    return tags
