"""The screen as a plain-text table (rows first, formatting second, so tests can check the rows)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from tlbench.screen.record import ScreenResult

HEADER = (
    "backbone", "px", "n_train", "n_val", "LogME", "kNN LOO", "kNN val", "probe CV", "as_is",
    "fwd GFLOPs", "extract s", "scores s", "cache",
)  # fmt: skip


def _number(value: float, digits: int = 3) -> str:
    return "—" if not math.isfinite(value) else f"{value:.{digits}f}"


def screen_rows(results: Sequence[ScreenResult]) -> list[tuple[str, ...]]:
    """One row per backbone; the best value of each score column is marked with ``*``."""
    best = {
        name: max((r.value(name) for r in results if math.isfinite(r.value(name))), default=math.nan)
        for name in ("logme", "knn_loo_acc", "knn_acc", "probe_cv_acc", "as_is_acc")
    }

    def cell(result: ScreenResult, name: str) -> str:
        value = result.value(name)
        mark = "*" if len(results) > 1 and math.isfinite(value) and value == best[name] else ""
        return _number(value) + mark

    rows: list[tuple[str, ...]] = []
    for r in results:
        score_seconds = sum(t.seconds for t in r.scores.values()) + (r.as_is.seconds if r.as_is else 0.0)
        rows.append(
            (
                r.backbone,
                str(r.resolution),
                str(r.n_train),
                str(r.n_val),
                cell(r, "logme"),
                cell(r, "knn_loo_acc"),
                cell(r, "knn_acc"),
                cell(r, "probe_cv_acc"),
                cell(r, "as_is_acc"),
                f"{r.forward_flops / 1e9:.1f}",
                f"{r.extract_seconds:.1f}",
                f"{score_seconds:.2f}",
                r.cache_status,
            )
        )
    return rows


def format_table(results: Sequence[ScreenResult]) -> str:
    """Aligned columns, numbers right-aligned; ``*`` marks the best backbone per score."""
    rows = [HEADER, *screen_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
