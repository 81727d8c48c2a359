"""Report sections: paired comparisons per data size, and learning curves with what more labels would buy."""

from __future__ import annotations

from tlbench.report.document import Block, Bullets, Callout, Heading, Paragraph, Table
from tlbench.report.formatting import pct, pp, signed_pp, size_label
from tlbench.report.learning_curve import Fall
from tlbench.report.outlook import Outlook, outlook_sentence
from tlbench.report.paired import SizeComparison, StrategyComparison
from tlbench.report.paired_stats import BINOMIAL
from tlbench.report.stats import Estimate

_METHOD = (
    "Per data size, each strategy against the most accurate one **on the same seeds (hence the same "
    "training subsets) and the same test images**. The 95% interval of the difference combines seed "
    "variation and test-set sampling (two-way random effects over seeds × test images, Student-t with "
    "Satterthwaite degrees of freedom); P(best) is the probability that a strategy has the highest true "
    "accuracy under the same model. A strategy is *credibly worse* when the whole interval lies below "
    "−{tol}. *Detectable*: the smallest difference this many seeds and test images would detect with 80% "
    "power."
)
_BINOMIAL = (
    "No per-image test predictions for some runs (`predictions/test.json`; studies older than it): for "
    "those sizes the test-set part is approximated as binomial, p(1−p)/n per strategy and independent "
    "across strategies. That ignores that strategies are scored on the same images, so these intervals "
    "are wider than paired ones would be."
)


def _diff_cell(s: StrategyComparison) -> str:
    if s.low is None or s.high is None:
        return "best"
    return f"{signed_pp(s.diff)} ({signed_pp(s.low).removesuffix(' pp')} to {signed_pp(s.high)})"


def _rows(c: SizeComparison) -> tuple[tuple[str, ...], ...]:
    return tuple(
        (
            size_label(c.n_per_class), s.strategy, pct(s.mean), _diff_cell(s),
            "—" if s.p_best is None else f"{s.p_best:.0%}",
            "—" if s.detectable is None else pp(s.detectable),
            f"{len(c.seeds_of(s))} × {c.images}" + (" (binomial)" if c.basis == BINOMIAL else ""),
        )
        for s in c.strategies
    )  # fmt: skip


def paired_section(comparisons: list[SizeComparison], *, tolerance: float) -> list[Block]:
    blocks: list[Block] = [Heading("Paired comparisons")]
    if not comparisons:
        return [
            *blocks,
            Callout(
                "No data size has two strategies with two shared final seeds: nothing to pair.", "warning"
            ),
        ]
    blocks.append(Paragraph(_METHOD.format(tol=pp(tolerance))))
    rows = tuple(row for c in comparisons for row in _rows(c))
    blocks.append(
        Table(
            ("Data", "Strategy", "Mean (paired seeds)", "Δ vs best (95% CI)", "P(best)", "Detectable Δ",
             "Seeds × test images"),
            rows,
            align=("l", "l", "r", "r", "r", "r", "r"),
            highlight=tuple(i for i, r in enumerate(rows) if r[3] == "best"),
            caption="Means over the seeds every jointly compared strategy has (they can differ from the "
            "summary, which uses each arm's own seeds). An arm with fewer seeds (retired by racing, or a "
            "failed seed) is paired with the best on the seeds the two share, and has no P(best) (—). "
            "Δ: strategy minus the best on the same seeds, percentage points.",
        )
    )  # fmt: skip
    if any(c.basis == BINOMIAL for c in comparisons):
        blocks.append(Callout(_BINOMIAL))
    notes = [n for c in comparisons for n in c.notes if "binomial" not in n]
    notes += [
        f"{size_label(c.n_per_class)}: not compared: {', '.join(c.left_out)}"
        for c in comparisons
        if c.left_out
    ]
    if notes:
        blocks.append(Bullets(tuple(notes)))
    return blocks


def _estimate(e: Estimate) -> str:
    if e.low is None or e.high is None:
        return f"{pct(e.mean)} (one seed)"
    return f"{pct(e.mean)} ({pct(e.low)}–{pct(min(e.high, 1.0))})"


def fall_text(f: Fall) -> str:
    return (
        f"**{f.strategy}** falls as data grows: {pct(f.from_acc)} at {size_label(f.from_size)} → "
        f"{pct(f.to_acc)} at {size_label(f.to_size)}. More labelled images should not hurt; a step budget "
        "that does not grow with the data or settings tuned at another size are the usual causes. Its "
        "fitted curve is flat, so its predictions say nothing about more labels."
    )


def _curve_notes(o: Outlook | None, falls: list[Fall]) -> list[str]:
    notes = [fall_text(f) for f in falls]
    two: dict[tuple[float, ...], list[str]] = {}
    for curve in o.curves if o is not None else ():
        if len(curve.sizes) == 2:
            two.setdefault(curve.sizes, []).append(f"**{curve.strategy}**")
    for sizes, names in two.items():
        notes.append(
            f"{', '.join(names)}: fitted from two sizes only ({' and '.join(f'{n:g}' for n in sizes)} per "
            "class). Two points fit any exponent, so it is fixed at 0.5, not estimated: the extrapolation "
            "rests on that assumption."
        )
    return notes


def curves_section(o: Outlook | None, *, falls: list[Fall]) -> list[Block]:
    blocks: list[Block] = [Heading("Learning curves: what more labels would buy")]
    notes = _curve_notes(o, falls)
    if o is None:
        blocks.append(Callout("Needs final runs of two or more strategies at two or more data sizes."))
        return [*blocks, Bullets(tuple(notes))] if notes else blocks
    blocks.append(
        Paragraph(
            "Per strategy and seed, a saturating curve acc(n) = a − b·n^(−c) through the final runs' test "
            "accuracy against labelled images per class (a ≤ 100%, b ≥ 0, c fitted; fixed at 0.5 with two "
            "sizes). Predictions are the mean over the seeds' curves with a 95% Student-t interval over "
            "seeds; they are **extrapolations** beyond the largest measured size, and the interval does not "
            "include the choice of curve."
        )
    )
    header = (
        "Strategy",
        "Sizes fitted",
        "Seeds",
        *(f"Predicted at ≈{t:.0f}/class (extrapolated)" for t in o.targets),
    )
    rows = tuple(
        (
            c.strategy,
            ", ".join(f"{n:g}" for n in c.sizes),
            str(len(c.seeds)),
            *(_estimate(p) for p in c.predictions),
        )
        for c in o.curves
    )
    blocks.append(Table(header, rows, align=("l", "l", "r", *("r",) * len(o.targets))))
    if notes:
        blocks.append(Bullets(tuple(notes)))
    blocks.append(Paragraph(outlook_sentence(o)))
    return blocks
