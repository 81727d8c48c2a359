"""The screen as the study's first phase: rank the backbone factor's values without training, keep the
top ``screen.keep`` by ``screen.score``, train only those (issue 22).

The screen (:func:`tlbench.screen.screen.run_screen`, one ``role=screen`` run per backbone under the
parent run, tagged ``screen_kept`` and ``screen_reason``) sees the trials' data at its largest size.
The kept backbones are stored in the meta study: a resumed study (or a worker) trains the same ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from tlbench.sweep.spec import SIZE_FACTOR, SweepSpec, format_value, pick_size
from tlbench.sweep.study import StudyContext
from tlbench.tracking import names
from tlbench.tracking.names import STUDY_TAG

SCREEN_ATTR = "screen"  # meta study: {"score", "keep", "ranking": [[backbone, value], ...], "kept": [...]}
BACKBONE_FACTOR = "backbone"


def rank(values: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """Best first; a score that could not be computed (NaN) ranks last; ties keep the factor's order
    (``sorted`` is stable)."""
    return sorted(values, key=lambda nv: (math.isnan(nv[1]), 0 if math.isnan(nv[1]) else -nv[1]))


def reasons(ranking: Sequence[tuple[str, float]], *, keep: int, score: str) -> dict[str, tuple[bool, str]]:
    """backbone -> (kept, why), for the screen runs' tags."""
    out = {}
    for position, (backbone, value) in enumerate(ranking, start=1):
        kept = position <= keep
        where = f"rank {position} of {len(ranking)} by {score} ({value:.4g})"
        out[backbone] = (
            kept,
            f"{where}: in the top {keep}, trained" if kept else f"{where}: below the top {keep}, not trained",
        )
    return out


def run_screen_phase(ctx: StudyContext, *, progress: Callable[[str], None] = print) -> list[str]:
    """Screen the backbone factor (once per study) and return the backbones kept, in factor order."""
    spec = ctx.spec
    assert spec.screen is not None  # called only for sweeps with a screen section
    done = ctx.meta.user_attrs.get(SCREEN_ATTR)
    if done:
        kept = [str(b) for b in done["kept"]]
        progress(f"screen: done already, training {', '.join(kept)}")
        return kept
    from tlbench.screen.screen import run_screen  # torch, sklearn: only when a study screens

    backbones = [str(v) for v in dict(spec.factors)[BACKBONE_FACTOR]]
    sizes = dict(spec.factors).get(SIZE_FACTOR)  # the data the trials train on, at its largest size
    largest = [f"{SIZE_FACTOR}={format_value(pick_size('largest', sizes))}"] if sizes else []
    results = run_screen(
        [*spec.base, *spec.overrides, *largest],
        backbones,
        experiment=ctx.names.study,
        tracking_uri=ctx.runs.tracking_uri,
        parent_run_id=ctx.parent_run_id,
        tags={STUDY_TAG: ctx.names.study},
        progress=lambda line: progress(f"screen: {line}"),
    )
    pairs = list(zip(backbones, results, strict=True))
    ranking = rank([(name, float(result.value(spec.screen.score))) for name, result in pairs])
    why = reasons(ranking, keep=spec.screen.keep, score=spec.screen.score)
    for name, result in pairs:
        if result.run_id:
            chosen, reason = why[name]
            tags = {names.SCREEN_KEPT: str(chosen).lower(), names.SCREEN_REASON: reason}
            ctx.runs.set_tags(result.run_id, tags)
    kept = [name for name in backbones if why[name][0]]
    record: dict[str, Any] = {
        "score": spec.screen.score,
        "keep": spec.screen.keep,
        "ranking": [[name, value] for name, value in ranking],
        "kept": kept,
    }
    ctx.meta.set_user_attr(SCREEN_ATTR, record)
    progress(f"screen: kept {', '.join(kept)} by {spec.screen.score}; not trained: "
             f"{', '.join(b for b in backbones if b not in kept) or 'none'}")  # fmt: skip
    return kept


def with_backbones(spec: SweepSpec, kept: Sequence[str]) -> SweepSpec:
    """``spec`` with the backbone factor narrowed to the kept backbones (the study's cells from now on)."""
    factors = tuple(
        (k, tuple(v for v in values if str(v) in kept) if k == BACKBONE_FACTOR else values)
        for k, values in spec.factors
    )
    return replace(spec, factors=factors)
