"""``default_sweep_pruned_over_unpruned``: the reduced sweep run with and without its pruner.

See :mod:`benchmarks.sweep_cost` for how the sweep is reduced and read back. Pairs are repeated
(alternating which sweep goes first) while the bench's time budget allows.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from benchmarks.cases import Plan
from benchmarks.measure import Progress
from benchmarks.report import RatioResult
from benchmarks.sweep_cost import (
    SweepRun,
    accuracy_gap_points,
    best_case_fraction,
    reduced_sweep,
    run_sweep,
)
from benchmarks.timing import spread
from tlbench.training.inputs import reset_feature_cache


def sweep_ratio(plan: Plan, uri: str, work: Path, progress: Progress) -> RatioResult:
    """default_sweep_pruned_over_unpruned on a reduced copy of the sweep (see :mod:`.sweep_cost`)."""
    from tlbench.sweep.spec import sweep_path

    source = yaml.safe_load(sweep_path(plan.sweep.source).read_text()) or {}
    threads = [f"trainer.num_threads={plan.threads}"] if plan.threads else []
    extra = ["trainer.feature_cache_dir=null", f"tracking.tracking_uri={uri}", *threads]
    pairs: list[tuple[SweepRun, SweepRun]] = []
    for repeat in range(plan.sweep.repeats):
        if pairs:
            pair_s = pairs[-1][0].sample.wall_s + pairs[-1][1].sample.wall_s
            if progress.elapsed() + 1.1 * pair_s > plan.budget_s:
                progress.line(
                    f"sweep: no repeat {repeat + 1} (it would end past the {plan.budget_s:.0f} s budget)"
                )
                break
        done: dict[bool, SweepRun] = {}
        for pruned in (True, False) if repeat % 2 == 0 else (False, True):
            reset_feature_cache()  # each sweep extracts its own features, as a fresh sweep would
            mapping = reduced_sweep(source, plan.sweep, extra_base=extra, pruned=pruned)
            study = f"bench-{'pruned' if pruned else 'unpruned'}-{repeat}"
            result = run_sweep(mapping, study=study, workdir=work, pruned=pruned, tracking_uri=uri)
            done[pruned] = result
            trials = sum(c.trials for c in result.cells)
            pruned_n = sum(c.pruned for c in result.cells)
            progress.line(
                f"{'sweep ' + study:<36} wall {result.sample.wall_s:7.2f} s  cpu {result.sample.cpu_s:7.2f} s"
                f"  {trials} trials, {pruned_n} pruned, {result.device_hours * 3600:.1f} device-s"
            )
        pairs.append((done[True], done[False]))
    ratios = [p.device_hours / u.device_hours for p, u in pairs]
    gaps = [accuracy_gap_points(p, u) for p, u in pairs]
    pruner = dict(source.get("pruner") or {})
    first_rung = int(pruner.get("min_resource", 1))
    budget = int((source.get("budget") or {}).get("trials_per_cell", 1))
    unpruned = [c for c in pairs[0][1].cells if c.epochs > 0 and c.trials > 0]
    bounds = {
        c.cell: best_case_fraction(epochs=c.epochs // c.trials, trials=budget, first_rung=first_rung)
        for c in unpruned
    }
    unpruned_hours = {c.cell: c.device_hours for c in unpruned}
    weighted = sum(bounds[k] * h for k, h in unpruned_hours.items()) / sum(unpruned_hours.values())
    wall = spread(ratios)
    cpu = spread([p.sample.cpu_s / u.sample.cpu_s for p, u in pairs])
    # work-based cross-check, free of timing noise: each cell's epoch ratio, weighted by its cost
    weighted_epochs = [
        sum(
            (pc.epochs / uc.epochs) * uc.device_hours
            for pc, uc in zip(p.cells, u.cells, strict=True)
            if uc.epochs
        )
        / u.device_hours
        for p, u in pairs
    ]
    known_gaps = [g for g in gaps if g is not None]
    return RatioResult(
        "default_sweep_pruned_over_unpruned",
        wall.median,
        wall=wall,
        cpu=cpu,
        accuracy_ok=all(g <= 1.0 for g in known_gaps) if known_gaps else None,
        details={
            "source": plan.sweep.source,
            "cells": plan.sweep.cells,
            "pruner": pruner,
            "trials_per_cell": budget,
            "repeats": len(pairs),
            "max_repeats": plan.sweep.repeats,
            "per_repeat_ratio": ratios,
            "epochs_ratio": [p.epochs / u.epochs for p, u in pairs],
            "cost_weighted_epochs_ratio": weighted_epochs,
            "accuracy_gap_points": gaps,
            "best_case_ratio_per_cell": bounds,
            "best_case_ratio": weighted,
            "runs": [{"pruned": p.as_dict(), "unpruned": u.as_dict()} for p, u in pairs],
            "note": "cpu_ratio compares the two sweep commands' CPU time; value uses cost/device_hours",
        },
    )
