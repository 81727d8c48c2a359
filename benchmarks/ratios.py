"""The trial-level ratios: harness vs raw loop, tracking, linear-probe caching, partial caching.

Each function warms up its kinds of run once (reported, not used), measures them interleaved, and
returns :class:`RatioResult` objects whose details hold every run, the configuration, and the
sanity checks that make the ratio meaningful (same work, same accuracy, theoretical bounds).
"""

from __future__ import annotations

import math
from typing import Any

from benchmarks import cases
from benchmarks.cases import TRACKED, UNTRACKED, Plan, Run
from benchmarks.measure import Progress, measure, median, paired_ratio, runs_detail
from benchmarks.report import RatioResult
from benchmarks.timing import spread
from tlbench.training.record import forget_flop_profiles


def finetune_ratios(plan: Plan, uri: str, progress: Progress) -> list[RatioResult]:
    """harness_over_raw_loop and tracking_on_over_off, from one interleaved trio per repeat."""
    tracked = (*TRACKED, f"tracking.tracking_uri={uri}")
    kinds = {
        "raw_loop": lambda: cases.raw_run(plan.overrides("finetune", *UNTRACKED)),
        "harness": lambda: cases.harness_run(plan.overrides("finetune", *UNTRACKED)),
        "harness_tracked": lambda: cases.harness_run(plan.overrides("finetune", *tracked)),
    }
    warm: dict[str, Run] = {}
    for kind in kinds:
        warm[kind] = _warm(kind, plan, uri)
        progress.run(f"warm-up finetune {kind}", warm[kind])
    runs = measure(kinds, plan.finetune_repeats, progress, "finetune")
    raw, harness, on = runs["raw_loop"], runs["harness"], runs["harness_tracked"]
    config = {"overrides": plan.overrides("finetune", *UNTRACKED), "tracked_extra": list(TRACKED)}
    first = harness[0].info
    batch = int(cases.config(plan.overrides("finetune")).trainer.batch_size)
    same_work = {
        "raw_optimizer_steps": raw[0].info["optimizer_steps"],
        "harness_optimizer_steps": first["epochs"] * math.ceil(first["n_train"] / batch),
        "raw_val_passes": raw[0].info["val_passes"],
        "harness_val_passes": first["val_passes"],
        "raw_test_acc": raw[0].info["test_acc"],
        "harness_test_acc": first["test_acc"],
    }
    overhead = [t.sample.wall_s - h.sample.wall_s for t, h in zip(on, harness, strict=True)]
    # Tracking adds nothing inside this trial's fit phase (the curve is buffered; no prefix FLOPs to
    # count), so the fit phase is common work: subtracting it removes most of the machine's noise.
    outside = [
        (t.sample.wall_s - t.info["fit_seconds"]) - (h.sample.wall_s - h.info["fit_seconds"])
        for t, h in zip(on, harness, strict=True)
    ]
    outside_ratio = [1.0 + d / h.sample.wall_s for d, h in zip(outside, harness, strict=True)]
    cold = warm["harness_tracked"].sample.wall_s - warm["harness"].sample.wall_s
    return [
        paired_ratio(
            "harness_over_raw_loop",
            harness,
            raw,
            config=config,
            same_work=same_work,
            runs=runs_detail({"harness": harness, "raw_loop": raw}),
        ),
        paired_ratio(
            "tracking_on_over_off",
            on,
            harness,
            config=config,
            tracking_overhead_s={"per_pair": overhead, "median": median(overhead)},
            outside_fit={
                "note": "cross-check: (wall - fit_seconds) tracked minus untracked, per pair",
                "overhead_s": spread(outside).as_dict(),
                "ratio": spread(outside_ratio).as_dict(),
            },
            first_trial_in_process={
                "note": "warm-up runs (1 epoch): MLflow experiment created, FLOP profile measured",
                "tracked_wall_s": warm["harness_tracked"].sample.wall_s,
                "untracked_wall_s": warm["harness"].sample.wall_s,
                "overhead_s": cold,
            },
            runs=runs_detail({"harness_tracked": on, "harness": harness}),
        ),
    ]


def _warm(kind: str, plan: Plan, uri: str) -> Run:
    """A short run of ``kind`` (same shapes and code paths) whose time is reported, not used."""
    if kind == "raw_loop":
        return cases.raw_run(plan.overrides("finetune", *UNTRACKED, warmup=True))
    if kind == "harness":
        return cases.harness_run(plan.overrides("finetune", *UNTRACKED, warmup=True))
    tracked = (*TRACKED, f"tracking.tracking_uri={uri}")
    return cases.harness_run(plan.overrides("finetune", *tracked, warmup=True))


def probe_ratios(plan: Plan, progress: Progress) -> list[RatioResult]:
    """linear_probe_cached_speedup and linear_probe_over_one_extraction_pass, interleaved trio."""
    flops = ("trainer.count_flops=true",)
    cached = plan.overrides("probe", *flops)
    uncached = plan.overrides("probe", *flops, "trainer.cache_features=false")
    progress.run("warm-up probe uncached (short)", cases.harness_run([*uncached, *plan.warmup["probe"]]))
    progress.run("warm-up probe extraction_pass", cases.floor_run(cached))
    # the first cached trial of a process measures its FLOP profiles: report that run apart
    forget_flop_profiles()
    cold = cases.harness_run(cached)
    progress.run("cold probe cached (FLOP profile cold)", cold)
    kinds = {
        "extraction_pass": lambda: cases.floor_run(cached),
        "probe_cached": lambda: cases.harness_run(cached),
        "probe_uncached": lambda: cases.harness_run(uncached),
    }
    runs = measure(kinds, plan.repeats, progress, "probe")
    floor, hit, miss = runs["extraction_pass"], runs["probe_cached"], runs["probe_uncached"]
    info = hit[0].info
    epochs = info["epochs"]
    seen, evaluated = info["n_train"] + info["n_val"], info["n_test"]
    bound = (epochs * seen + evaluated) / (seen + evaluated)
    fit_ratio = [m.info["fit_seconds"] / h.info["fit_seconds"] for m, h in zip(miss, hit, strict=True)]
    accuracy: dict[str, Any] = {
        "cached_test_acc": [r.info["test_acc"] for r in hit],
        "uncached_test_acc": [r.info["test_acc"] for r in miss],
        "cached_val_acc": [r.info["val_acc"] for r in hit],
        "uncached_val_acc": [r.info["val_acc"] for r in miss],
    }
    accuracy["equal"] = accuracy["cached_test_acc"] == accuracy["uncached_test_acc"]
    sizes = {"n_train": info["n_train"], "n_val": info["n_val"], "n_test": info["n_test"], "epochs": epochs}
    cold_overhead = cold.sample.wall_s - median([r.sample.wall_s for r in hit])
    # What the cached trial adds to the forward pass, in seconds: model build, head training, test
    # pass. It does not scale with the backbone's speed, so faster kernels lower both probe ratios.
    over_floor = [h.sample.wall_s - f.sample.wall_s for h, f in zip(hit, floor, strict=True)]
    return [
        paired_ratio(
            "linear_probe_cached_speedup",
            miss,
            hit,
            config={"cached": cached, "uncached": uncached},
            sizes=sizes,
            theoretical_upper_bound=bound,
            target_reachable=bound >= 8.0,
            fit_seconds_ratio=spread(fit_ratio).as_dict(),
            accuracy=accuracy,
            feature_cache=[r.info["feature_cache"] for r in hit],
            runs=runs_detail({"probe_uncached": miss, "probe_cached": hit}),
        ),
        paired_ratio(
            "linear_probe_over_one_extraction_pass",
            hit,
            floor,
            config={"trial": cached, "floor_images": floor[0].info["images"]},
            cold_flop_profile={"wall_s": cold.sample.wall_s, "overhead_over_warm_median_s": cold_overhead},
            seconds_over_floor=spread(over_floor).as_dict(),
            floor_seconds=spread([f.sample.wall_s for f in floor]).as_dict(),
            runs=runs_detail({"probe_cached": hit, "extraction_pass": floor}),
        ),
    ]


def partial_ratio(plan: Plan, progress: Progress) -> RatioResult:
    flops = ("trainer.count_flops=true",)
    cached = plan.overrides("partial", *flops)
    uncached = plan.overrides("partial", *flops, "trainer.cache_features=false")
    warm = plan.warmup["partial"]
    progress.run("warm-up partial cached", cases.harness_run([*cached, *warm]))
    progress.run("warm-up partial uncached", cases.harness_run([*uncached, *warm]))
    kinds = {
        "partial_cached": lambda: cases.harness_run(cached),
        "partial_uncached": lambda: cases.harness_run(uncached),
    }
    runs = measure(kinds, plan.repeats, progress, "partial")
    hit, miss = runs["partial_cached"], runs["partial_uncached"]

    def work(run: Run) -> float:
        return float(run.info["train_flops"] or 0.0) + float(run.info["eval_flops"] or 0.0)

    return paired_ratio(
        "partial_cached_speedup",
        miss,
        hit,
        config={"cached": cached, "uncached": uncached},
        flop_ratio=work(miss[0]) / work(hit[0]) if work(hit[0]) else None,
        accuracy={"cached_test_acc": hit[0].info["test_acc"], "uncached_test_acc": miss[0].info["test_acc"]},
        feature_cache=[r.info["feature_cache"] for r in hit],
        runs=runs_detail(runs),
    )
