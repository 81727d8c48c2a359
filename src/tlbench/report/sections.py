"""The report's sections as blocks, from already-computed tables (pure: no I/O, no drawing)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd

from tlbench.report.figures import CostUnit, FigureInfo, Missing
from tlbench.report.recommend import (
    Outlook,
    Recommendation,
    SizeComparison,
    StrategyComparison,
    frontier_text,
    outlook_sentence,
    recommendation_text,
)
from tlbench.report.render import (
    Block,
    Bullets,
    Callout,
    Code,
    Figure,
    Heading,
    Paragraph,
    Table,
    pct,
    pp,
    seconds,
    si,
    sig,
    signed_pp,
    size_label,
    sorted_sizes,
)
from tlbench.report.stats import BINOMIAL, Estimate
from tlbench.report.tables import (
    BEST_SCOPE,
    CHANCE_SE,
    SCREEN_SCORES,
    Agreement,
    FailedConfiguration,
    Pick,
    Totals,
    TuningRow,
    agreements,
    best_tuning_val,
    budget_checks,
    cell_gaps,
    failed_configurations,
    failures,
    outcome_counts,
    parse_race,
    picks,
    ranking_table,
    scopes,
    sweep_budget,
    tuning_protocol,
)
from tlbench.tracking import names as N
from tlbench.tracking.names import FIT_CPU_SECONDS
from tlbench.tracking.study import StudyRecords, StudyRef, redact_uri

DrawnFigure = tuple[FigureInfo, tuple[str, str] | None, int]


@dataclass(frozen=True)
class StudyAnalysis:
    """A study's runs and everything the report and the recommended arm compute from them."""

    ref: StudyRef
    records: StudyRecords
    plain: pd.DataFrame  # the trials table of every run but the screens (they have their own section)
    trials: pd.DataFrame  # the same, strategies relabelled per arm (report.tables.label_arms)
    comparisons: list[SizeComparison]  # paired, per data size
    summary: pd.DataFrame
    recommendations: list[Recommendation]
    tolerance: float
    unit: CostUnit
    # the report's own, added by build_report
    figures: list[DrawnFigure] = field(default_factory=list)
    report_software: dict[str, str] = field(default_factory=dict)


# --- header, recommendation, summary, figures, appendix -----------------------------------------------------


def header(inp: StudyAnalysis) -> list[Block]:
    trials, parent = inp.trials, inp.records.parent
    sweep = inp.ref.tags.get(N.SWEEP_TAG) or (parent.tags.get(N.SWEEP_TAG) if parent else None)
    n_tune, n_final = int((trials[N.ROLE] == N.TUNE).sum()), int((trials[N.ROLE] == N.FINAL).sum())
    facts = (
        f"Sweep `{sweep or 'unknown'}` · dataset {_values(trials['dataset'], limit=None)} · backbone "
        f"{_values(trials['backbone'], limit=None)} (weights {_values(trials['weights'], limit=None)}) · "
        f"{len(trials)} trials ({n_tune} tuning, {n_final} final). Built from MLflow experiment "
        f"`{inp.ref.name}` (id {inp.ref.experiment_id}, parent run `{parent.run_id if parent else 'none'}`) "
        f"in `{inp.records.tracking_uri}`; nothing was re-trained."
    )
    blocks: list[Block] = [
        Heading(f"Study `{inp.ref.name}`: transfer-learning trade-offs", level=1),
        Paragraph(facts),
        Paragraph(
            "Which accuracy is which: the summary, the recommendation, the trade-off and data-scaling "
            "figures use **test accuracy of final runs** (each strategy's tuned configuration re-trained on "
            "fresh seeds). LR sensitivity and the tuning trade-off use **validation accuracy of tuning "
            "trials**; test accuracy never influenced tuning."
        ),
    ]
    if issues := problems(inp):
        text = "This study is incomplete: " + "; ".join(issues) + ". Details under Data coverage."
        blocks.append(Callout(text, "warning"))
    return blocks


def _failed_arms(inp: StudyAnalysis) -> list[Block]:
    failed = [f for f in failed_configurations(inp.trials) if f.arm_failed]
    if not failed:
        return []
    arms = ", ".join(f"**{f.strategy}** at {size_label(f.n_per_class)}" for f in failed)
    return [
        Callout(
            f"Failed, not compared: {arms} (every final seed collapsed; see Failed configurations). A failed "
            "arm is neither recommended nor called worse: its configuration did not train.",
            "warning",
        )
    ]


def recommendation_section(inp: StudyAnalysis) -> list[Block]:
    if not inp.recommendations:
        return [
            Heading("Recommendation"),
            Callout("No completed final run in this study: there is nothing to recommend.", "warning"),
            *_failed_arms(inp),
        ]
    unit, tolerance = inp.unit.unit, inp.tolerance
    rule = (
        f"For each data size: the cheapest strategy ({unit} per run) that is not credibly worse than the "
        "most accurate: the 95% interval of its paired difference to the best (same seeds, same test "
        "images; see Paired comparisons) includes 0, or its mean difference is within "
        f"**{pp(tolerance)}** (`--tolerance {tolerance:g}`). Where no two strategies share two seeds, the "
        f"cheapest whose mean is within {pp(tolerance)} of the best mean. Accuracies are those of the "
        "summary table."
    )
    frontier = (
        "Along each size's Pareto frontier (strategies that no other strategy beats on both accuracy and "
        "cost):"
    )
    blocks: list[Block] = [
        Heading("Recommendation"),
        Paragraph(rule),
        Bullets(tuple(recommendation_text(r, tolerance=tolerance, unit=unit) for r in inp.recommendations)),
        *_failed_arms(inp),
        Heading(f"Accuracy bought per extra {unit[:-1]}", level=3),
        Paragraph(frontier),
        Bullets(tuple(frontier_text(r, unit=unit) for r in inp.recommendations)),
    ]
    return [*blocks, Callout(inp.unit.note, "warning")] if inp.unit.note else blocks


_SUMMARY_CAPTION = (
    "Final runs only (role=final, status=completed). ★ best mean per data size. CI: Student-t over seeds, "
    "n−1 degrees of freedom; a single seed has none. Costs are means per run. Exact values: results.csv; "
    "LaTeX: summary.tex."
)


def _acc_cell(row: pd.Series) -> str:
    ci = float(row["acc_ci"])
    text = f"{pct(row['acc_mean'])} (single seed)" if math.isnan(ci) else f"{pct(row['acc_mean'])} ± {pp(ci)}"
    return f"**{text}** ★" if bool(row["best"]) else text


def summary_section(inp: StudyAnalysis) -> list[Block]:
    summary = inp.summary
    if summary.empty:
        return [
            Heading("Summary"),
            Callout("No completed final run with a test accuracy: no summary.", "warning"),
        ]
    rows = tuple(
        (
            size_label(str(r["n_per_class"])), str(r["strategy"]), _acc_cell(r), str(int(r["seeds"])),
            sig(float(r["device_hours"])), si(float(r["train_flops"])), si(float(r["trainable_params"])),
        )
        for _, r in summary.iterrows()
    )  # fmt: skip
    header = ("Data", "Strategy", "Test accuracy (mean ± 95% CI)", "Seeds", inp.unit.label, "Train FLOPs/run",
              "Trainable params")  # fmt: skip
    best = tuple(i for i, b in enumerate(summary["best"]) if bool(b))
    blocks: list[Block] = [
        Heading("Summary"),
        Table(header, rows, align="llrrrrr", caption=_SUMMARY_CAPTION, highlight=best),
    ]
    tuning = best_tuning_val(inp.trials)
    if not tuning.empty:
        tuned = tuple(
            (size_label(str(r["n_per_class"])), str(r["strategy"]), str(int(r["trials"])), pct(r["val_acc"]))
            for _, r in tuning.iterrows()
        )
        caption = "Validation accuracy chose each strategy's configuration; it is not a test result."
        columns = ("Data", "Strategy", "Completed tuning trials", "Best validation accuracy")
        blocks += [Heading("Tuning", level=3), Table(columns, tuned, align="llrr", caption=caption)]
    return blocks


def figures_section(inp: StudyAnalysis) -> list[Block]:
    blocks: list[Block] = [Heading("Figures")]
    for info, paths, width in inp.figures:
        blocks.append(Heading(info.title, level=3))
        if isinstance(info, Missing) or paths is None:
            reason = info.reason if isinstance(info, Missing) else "it could not be drawn"
            hint = f" — {info.hint}" if isinstance(info, Missing) else ""
            blocks.append(Callout(f"Not in this study: {reason}{hint}."))
            continue
        blocks.append(Figure(info.title, paths[0], paths[1], info.caption, info.notes, width))
    return blocks


def appendix(inp: StudyAnalysis, files: list[str]) -> list[Block]:
    blocks: list[Block] = [Heading("Files"), Bullets(tuple(files))]
    if inp.records.sweep_yaml:
        blocks += [
            Heading("Sweep definition (`sweep.yaml` of the parent run)", level=3),
            Code(inp.records.sweep_yaml, "yaml"),
        ]
    return blocks


# --- what a study lacks, and what failed --------------------------------------------------------------------


def problems(inp: StudyAnalysis) -> list[str]:
    """Short statements of what is missing or partial; empty for a complete study."""
    trials = inp.trials
    out = []
    if inp.records.parent is None:
        out.append("the study has no parent run (`role=study`): the report could not be attached to MLflow")
    if inp.records.extra_parents:
        out.append(f"{inp.records.extra_parents + 1} parent runs found; the oldest was used")
    # pruned tuning trials are the protocol working; a failed tuning trial shows as a missing final run
    final = trials[trials[N.ROLE] == N.FINAL]
    counts = (
        ("final run(s) failed", (final["outcome"] == "failed") & ~final[N.COLLAPSED]),
        ("final run(s) interrupted", final["outcome"] == "interrupted"),
        ("trial(s) running", trials["outcome"] == "running"),
    )
    out += [f"{int(mask.sum())} {what}" for what, mask in counts if mask.any()]
    failed_arms = [f for f in failed_configurations(trials) if f.arm_failed]
    failed_cells = {(f.strategy, f.n_per_class) for f in failed_arms}
    if failed_arms:
        out.append(
            "failed (collapsed) arm(s): "
            + ", ".join(f"{f.strategy} at {size_label(f.n_per_class)}" for f in failed_arms)
        )
    gaps = [g for g in cell_gaps(trials) if (g.strategy, g.n_per_class) not in failed_cells]
    missing = [f"{g.strategy} at {size_label(g.n_per_class)}" for g in gaps if g.final_completed == 0]
    single = [f"{g.strategy} at {size_label(g.n_per_class)}" for g in gaps if g.final_completed == 1]
    if missing:
        out.append("no completed final run for " + ", ".join(missing))
    if single and len(single) == len(inp.summary):
        out.append("a single final seed everywhere, so no confidence intervals")
    elif single:
        out.append("a single final seed (no confidence interval) for " + ", ".join(single))
    return out


_OUTCOME_NOTES = {
    "pruned": "pruned early: their validation accuracy is partial, so the figures leave them out.",
    "interrupted": "interrupted (stopped, not failed): `make sweep` resumes the study and redoes them.",
    "running": "still running or abandoned: re-run `make report` when the sweep is done.",
}


def coverage_section(inp: StudyAnalysis) -> list[Block]:
    trials = inp.trials
    blocks: list[Block] = [Heading("Data coverage")]
    if trials.empty:
        return [*blocks, Callout("The study has no trial runs yet.", "warning")]
    counts = outcome_counts(trials)
    rows = tuple((str(role), *(str(v) for v in row)) for role, row in counts.iterrows())
    caption = (
        "Trials by role and outcome. Pruned and failed trials count in the compute totals, never in "
        "accuracies."
    )
    blocks.append(
        Table(("Role", *counts.columns), rows, align="l" + "r" * len(counts.columns), caption=caption)
    )
    items = [
        f"{role} trial failed ({strategy}, {size_label(size)}): {status.removeprefix('failed: ')}"
        for role, strategy, size, status in failures(trials)
    ]
    for outcome, note in _OUTCOME_NOTES.items():
        if n := int((trials["outcome"] == outcome).sum()):
            items.append(f"{n} trial(s) {note}")
    gaps = cell_gaps(trials)
    single = [g for g in gaps if g.final_completed == 1]
    if single and len(single) == len(inp.summary):
        items.append(
            "Every strategy × data size has a single completed final seed: no confidence intervals. "
            "List more seeds under `final_seeds` in the sweep file to get them."
        )
    for gap in gaps:
        where = f"{gap.strategy} at {size_label(gap.n_per_class)}"
        if gap.final_completed == 1:
            if len(single) != len(inp.summary):
                items.append(f"{where}: a single completed final seed — no confidence interval.")
            continue
        other = ", ".join(f"{n} {o}" for o, n in sorted(gap.final_other.items()))
        detail = f" (final runs: {other})" if other else f" ({gap.tune_runs} tuning trial(s), no final run)"
        items.append(f"{where}: no completed final run{detail} — absent from summary and recommendation.")
    if items:
        return [*blocks, Bullets(tuple(items))]
    return [
        *blocks,
        Paragraph("Every trial completed and every strategy × data size has at least two final seeds."),
    ]


def _roles(runs: dict[str, int]) -> str:
    words = {N.FINAL: "final seed(s)", N.TUNE: "tuning trial(s)", N.BUDGET_CHECK: "budget check(s)"}
    return ", ".join(f"{n} {words.get(role, role + ' run(s)')}" for role, n in runs.items())


def _reasons(reasons: tuple[str, ...]) -> str:
    """One example per kind of reason (the same words, other numbers), with how many runs share it."""
    kinds: dict[str, list[str]] = {}
    for reason in reasons:
        kinds.setdefault(re.sub(r"[-+]?\d[\d.,e]*", "#", reason), []).append(reason)
    return "; ".join(
        group[0] + (f" (and {len(group) - 1} alike)" if len(group) > 1 else "") for group in kinds.values()
    )


def failed_text(f: FailedConfiguration) -> str:
    """``lp_ft at n=10/class: 2 final seed(s) collapsed — <reason>; the arm failed ...``."""
    reasons = _reasons(f.reasons)
    text = f"**{f.strategy}** at {size_label(f.n_per_class)}: {_roles(f.runs)} collapsed — {reasons}"
    if f.arm_failed:
        return text + ". Every final seed collapsed: the arm **failed** and is not compared."
    if f.runs.get(N.FINAL):
        return text + f". Its {f.finals_left} other final seed(s) are reported; the collapsed ones are not."
    return text + ". Never selected."


def failed_section(inp: StudyAnalysis) -> list[Block]:
    """Runs whose result is degenerate: a failure of the configuration, never a finding about the arm."""
    found = failed_configurations(inp.trials)
    if not found:
        return []
    return [
        Heading("Failed configurations"),
        Paragraph(
            "A run **collapsed** when its validation accuracy ended within noise of chance or its training "
            "loss ended above where it started and above a chance guess's (the trial's own check; for runs "
            "of older studies, "
            "validation accuracy within two standard errors of chance). A collapsed run is a failed "
            "configuration: it is excluded from the summary, the paired comparisons, the figures and the "
            "recommendation, and an arm whose every final seed collapsed is reported here, never as "
            '"worse".'
        ),
        Bullets(tuple(failed_text(f) for f in found)),
    ]


# --- paired comparisons and learning curves -----------------------------------------------------------------

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
        text = "No data size has two strategies with two shared final seeds: nothing to pair."
        return [*blocks, Callout(text, "warning")]
    blocks.append(Paragraph(_METHOD.format(tol=pp(tolerance))))
    rows = tuple(row for c in comparisons for row in _rows(c))
    blocks.append(
        Table(
            ("Data", "Strategy", "Mean (paired seeds)", "Δ vs best (95% CI)", "P(best)", "Detectable Δ",
             "Seeds × test images"),
            rows,
            align="llrrrrr",
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
    return [*blocks, Bullets(tuple(notes))] if notes else blocks


def _estimate(e: Estimate) -> str:
    if e.low is None or e.high is None:
        return f"{pct(e.mean)} (one seed)"
    return f"{pct(e.mean)} ({pct(e.low)}–{pct(min(e.high, 1.0))})"


def _curve_notes(o: Outlook | None, falls: list[str]) -> list[str]:
    notes = list(falls)
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


def curves_section(o: Outlook | None, *, falls: list[str]) -> list[Block]:
    """``falls``: :func:`tlbench.report.recommend.falling_curves`' sentences."""
    heading = Heading("Learning curves: what more labels would buy")
    notes: list[Block] = [Bullets(tuple(n))] if (n := _curve_notes(o, falls)) else []
    if o is None:
        return [
            heading,
            Callout("Needs final runs of two or more strategies at two or more data sizes."),
            *notes,
        ]
    method = (
        "Per strategy and seed, a saturating curve acc(n) = a − b·n^(−c) through the final runs' test "
        "accuracy against labelled images per class (a ≤ 100%, b ≥ 0, c fitted; fixed at 0.5 with two "
        "sizes). Predictions are the mean over the seeds' curves with a 95% Student-t interval over "
        "seeds; they are **extrapolations** beyond the largest measured size, and the interval does not "
        "include the choice of curve."
    )
    targets = (f"Predicted at ≈{t:.0f}/class (extrapolated)" for t in o.targets)
    rows = tuple(
        (c.strategy, ", ".join(f"{n:g}" for n in c.sizes), str(len(c.seeds)), *map(_estimate, c.predictions))
        for c in o.curves
    )
    table = Table(("Strategy", "Sizes fitted", "Seeds", *targets), rows, align="llr" + "r" * len(o.targets))
    return [heading, Paragraph(method), table, *notes, Paragraph(outlook_sentence(o))]


# --- screen vs training -------------------------------------------------------------------------------------


def _num(value: float, digits: int = 2) -> str:
    return "—" if not math.isfinite(value) else f"{value:+.{digits}f}"


def _score_cell(value: float, score: str) -> str:
    if not math.isfinite(value):
        return "—"
    return f"{value:.3f}" if score == "screen/logme" else pct(value)


def _screen_rows(screen: pd.DataFrame, trained: pd.DataFrame, shown: Sequence[str]) -> list[tuple[str, ...]]:
    best = trained.sort_values("test_acc", ascending=False).drop_duplicates("backbone").set_index("backbone")
    rows = []
    for r in screen.to_dict("records"):
        name = str(r["backbone"])
        top = (
            f"{pct(float(best.loc[name, 'test_acc']))} ({best.loc[name, 'strategy']})"
            if name in best.index
            else "—"
        )
        rows.append(
            (name, str(r["resolution"]), *(_score_cell(float(r[s]), s) for s in shown),
             si(float(r["cost/forward_flops"]), "FLOPs"), f"{float(r['cost/screen_seconds']):.1f} s", top)
        )  # fmt: skip
    return rows


def _agreement_rows(
    found: list[Agreement], shown: Sequence[str], order: Sequence[str]
) -> tuple[tuple[str, ...], ...]:
    table = {(a.score, a.scope): a for a in found}
    rows = []
    for scope in order:
        cells = [table.get((s, scope)) for s in shown]
        if n := max((c.n for c in cells if c is not None), default=0):
            tau_rho = (f"{_num(c.kendall_tau)} / {_num(c.spearman_rho)}" if c else "—" for c in cells)
            rows.append((scope, str(n), *tau_rho))
    return tuple(rows)


def _pick_text(pick: Pick) -> str:
    label = SCREEN_SCORES[pick.score]
    if pick.tied:
        names = ", ".join(f"`{b}`" for b in pick.tied)
        return f"**{label}** ties between {names}: no pick (training found `{pick.trained_best}` best)."
    if pick.same:
        best = pct(pick.trained_best_acc)
        return f"**{label}** picks `{pick.screen_pick}`: the backbone training found best ({best})."
    return (
        f"**{label}** picks `{pick.screen_pick}` ({pct(pick.pick_acc)} at its best strategy); training "
        f"found `{pick.trained_best}` best ({pct(pick.trained_best_acc)}): trusting the screen gives up "
        f"{pp(pick.regret)}."
    )


def _rank(value: object) -> str:
    return "—" if value is None or pd.isna(value) else f"{int(float(str(value)))}"


def _status(row: pd.Series) -> str:
    if row["kept"] is None or pd.isna(row["kept"]):
        return "trained" if not pd.isna(row["trained_acc"]) else "not trained"
    return "kept" if bool(row["kept"]) else "dropped"


def phase_blocks(screen: pd.DataFrame, trained: pd.DataFrame, shown: Sequence[str]) -> list[Block]:
    """A study's screen phase: kept and dropped backbones, the screen's ranking beside training's."""
    if screen["kept"].isna().all():
        return []
    table = ranking_table(screen, trained)
    dropped = table[table["kept"].map(lambda v: v is False)]
    kept = int(table["kept"].map(lambda v: v is True).sum())
    blocks: list[Block] = [
        Heading("The screen phase", level=3),
        Paragraph(
            f"The study screened {len(table)} backbone(s) before training and kept {kept} for training"
            + (f"; {len(dropped)} dropped:" if len(dropped) else ".")
        ),
    ]
    if len(dropped):
        reasons = (f"`{r.backbone}`: {r.screen_reason or 'no reason recorded'}" for r in dropped.itertuples())
        blocks.append(Bullets(tuple(reasons)))
    ranked = [s for s in shown if f"rank:{s}" in table]
    header = ("backbone", N.SCREEN, *(f"rank by {SCREEN_SCORES[s]}" for s in ranked), "trained rank",
              "trained best")  # fmt: skip
    rows = tuple(
        (str(row["backbone"]), _status(row), *(_rank(row[f"rank:{s}"]) for s in ranked),
         _rank(row["trained_rank"]),
         "—" if pd.isna(acc := row["trained_acc"]) else f"{pct(float(acc))} ({row['trained_strategy']})")
        for _, row in table.iterrows()
    )  # fmt: skip
    caption = (
        "Ranks: 1 = best; the screen ranks every screened backbone, training only those it trained (by the "
        "best strategy's mean final test accuracy)."
    )
    blocks.append(Table(header, rows, align="ll" + "r" * len(ranked) + "rr", caption=caption))
    trained_n = int(table["trained_acc"].notna().sum())
    taus = [a for a in agreements(screen, trained) if a.scope == BEST_SCOPE]
    if trained_n < 2 or not taus:
        text = (
            "Fewer than two backbones were trained: there is no trained ranking to set the screen's against "
            "(Kendall's τ needs two)."
        )
    else:
        items = ", ".join(f"{SCREEN_SCORES[a.score]} {_num(a.kendall_tau)}" for a in taus)
        text = (
            f"**Kendall's τ-b between the screen's ranking and training's**, over the {trained_n} backbones "
            f"that were trained: {items}. With {trained_n} backbones τ takes few values"
            + (" (±1 only)." if trained_n == 2 else ".")
        )
    return [*blocks, Paragraph(text)]


def screen_blocks(screen: pd.DataFrame, trained: pd.DataFrame, figure: Figure | None) -> list[Block]:
    shown = [s for s in SCREEN_SCORES if s in screen and not screen[s].isna().all()]
    blocks: list[Block] = [
        Heading("Screen vs training"),
        Paragraph(
            f"Before training, {len(screen)} backbone(s) were scored from one forward pass of the training "
            f"pool (`role=screen` runs): {sum(screen['cost/screen_seconds'].fillna(0)):.1f} s and "
            f"{si(float(screen['cost/forward_flops'].fillna(0).sum()), 'FLOPs')} in all. LogME is the "
            "Bayesian linear-model evidence per sample (higher is better); kNN and the probe are accuracies."
        ),
        Table(
            ("backbone", "px", *(SCREEN_SCORES[s] for s in shown), "forward", "screen time", "trained best"),
            tuple(_screen_rows(screen, trained, shown)),
            align="lr" + "r" * len(shown) + "rrr",
            caption="Screen scores per backbone; 'trained best' = mean final test accuracy of the backbone's "
            "best strategy in this study.",
        ),
    ]
    blocks += phase_blocks(screen, trained, shown)
    if trained.empty or not set(trained["backbone"]) & set(screen["backbone"]):
        text = "no completed final runs of the screened backbones: nothing to compare the screen with"
        return [*blocks, Callout(text, "warning")]
    blocks.append(
        Table(
            ("scope", "n", *(SCREEN_SCORES[s] for s in shown)),
            _agreement_rows(agreements(screen, trained), shown, scopes(trained)),
            align="lr" + "r" * len(shown),
            caption="Kendall's τ-b / Spearman's ρ between each screen score and mean final test accuracy: "
            f"across backbones within a strategy, across backbones at their best strategy ('{BEST_SCOPE}'), "
            "and over all cells. With n points τ takes few values (n = 3: ±1/3 or ±1); no p-values at "
            "this n.",
        )
    )
    chosen = picks(screen, trained)
    if chosen:
        same = [p for p in chosen if p.same]
        decided = [p for p in chosen if not p.tied]
        verdict = (
            "every screen score picks the backbone training found best"
            if len(same) == len(chosen)
            else "every screen score that picks a single backbone picks the one training found best"
            if decided and len(same) == len(decided)
            else f"{len(same)} of {len(decided)} screen scores that pick one pick the backbone training "
            "found best"
        )
        if len(decided) < len(chosen):
            verdict += f" ({len(chosen) - len(decided)} tied at the top)"
        blocks += [
            Paragraph(f"**Would the screen alone have picked the same backbone?** {verdict.capitalize()}."),
            Bullets(tuple(_pick_text(p) for p in chosen)),
        ]
    return blocks if figure is None else [*blocks, figure]


# The Methods section, from what the runs logged (not what the config meant to do).

_TRAINING = ("optimizer", "schedule", "epochs", "batch_size", "weight_decay", "head", "precision", "augment")


def _values(values: pd.Series, *, limit: int | None = 4) -> str:
    seen = sorted({str(v) for v in values.dropna() if str(v) not in {"", "<NA>"}})
    if not seen:
        return "not recorded"
    shown = ", ".join(f"`{v}`" for v in seen[:limit])
    return shown if limit is None or len(seen) <= limit else f"{shown} and {len(seen) - limit} more"


def _per_cell(trials: pd.DataFrame, role: str, *, completed: bool = False) -> str:
    """The range of run counts of ``role`` per strategy × size (``3`` or ``2–4``)."""
    rows = trials[trials[N.ROLE] == role]
    rows = rows[rows["outcome"] == "completed"] if completed else rows
    counts = rows.groupby(["strategy", "n_per_class"]).size()
    if counts.empty:
        return "0"
    low, high = int(counts.min()), int(counts.max())
    return str(low) if low == high else f"{low}–{high}"


def _when(ms: int | None) -> str:
    if ms is None:
        return "unknown"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def methods_section(inp: StudyAnalysis, totals: Totals) -> list[Block]:
    t = inp.trials
    lrs = pd.to_numeric(t["lr"], errors="coerce").dropna()
    lr_text = f"{lrs.min():.3g}–{lrs.max():.3g}" if len(lrs) and lrs.min() != lrs.max() else _values(t["lr"])
    training = "; ".join(f"{name} {_values(t[name])}" for name in _TRAINING)
    sizes = [
        f"{size_label(s)} → {_values(t[t['n_per_class'] == s]['n_train'])}"
        for s in sorted_sizes(t["n_per_class"])
    ]
    role_hours = ", ".join(
        f"{role or '(no role)'} {sig(h)}" for role, h in totals.device_hours_by_role.items()
    )
    bullets = (
        f"**Backbone:** {_values(t['backbone'])}, initial weights {_values(t['weights'])} "
        f"(freeze groups: {_values(t['freeze_groups'])}).",
        f"**Dataset:** {_values(t['dataset'])} at {_values(t['resolution'])} px, "
        f"{_values(t['n_classes'])} classes "
        f"(data fingerprint {_values(t['data_fingerprint'])}). Validation {_values(t['n_val'])} and test "
        f"{_values(t['n_test'])} images, the same for every data size and seed (split seed "
        f"{_values(t['split_seed'])}). Training images: {'; '.join(sizes) or 'not recorded'}.",
        f"**Protocol:** per strategy × data size, {_per_cell(t, N.TUNE)} tuning trials chose the "
        f"configuration on validation accuracy (learning rate {lr_text}); the best configuration was "
        f"re-trained with {_per_cell(t, N.FINAL)} final seed(s) per cell "
        f"({_per_cell(t, N.FINAL, completed=True)} completed), each evaluated once on the test set.",
        f"**Training:** {training}.",
        f"**Statistics:** means over final seeds with two-sided 95% Student-t intervals (n−1 degrees of "
        f"freedom); no interval from a single seed. Recommendation tolerance: {pp(inp.tolerance)} "
        "(absolute accuracy).",
        f"**Hardware:** device {_values(t['device'])} ({_values(t['device_model'])}), "
        f"{_values(t['device_count'])} device(s) per trial.",
        cost_rule(t),
        f"**Software:** tlbench {_values(t['tlbench_version'])}, torch {_values(t['torch_version'])}, "
        f"Python {_values(t['python_version'])}; report built with "
        + ", ".join(f"{k} `{v}`" for k, v in inp.report_software.items())
        + ".",
        f"**Total compute of the study:** {sig(totals.device_hours)} {inp.unit.unit} "
        f"({seconds(totals.fit_seconds)} of fitting; by role: {role_hours}), "
        f"{si(totals.train_flops, 'FLOPs')} of training, over {totals.runs} trials including pruned and "
        "failed ones; runs from "
        f"{_when(totals.first_start_ms)} to {_when(totals.last_end_ms)}.",
    )
    blocks: list[Block] = [Heading("Methods"), Bullets(bullets)]
    parent = inp.records.parent
    if parent is not None and parent.params:
        settings = tuple((f"`{k}`", redact_uri(str(v))) for k, v in sorted(parent.params.items()))
        blocks += [
            Paragraph("Sweep settings logged on the study's parent run:"),
            Table(("Parameter", "Value"), settings),
        ]
    blocks += tuning_blocks(t, inp.records.sweep_yaml)
    blocks += budget_blocks(t, tolerance=inp.tolerance)
    blocks += race_blocks(inp.records.race_json)
    blocks += [
        Heading("Collapse rule", level=3),
        Paragraph(
            "A run whose validation accuracy ends within noise of chance (an exact one-sided binomial test "
            "at 5%), or whose training loss ends above where it started and above a chance guess's "
            "(−ln of the largest class's share), is a failed configuration (tag `collapsed`): never "
            "selected by tuning, never "
            "in a summary, comparison or figure (see Failed configurations). For runs that carry no such "
            "tag, the report applies the chance part itself: validation accuracy at most 1/classes + "
            f"{CHANCE_SE:g} binomial standard errors over the validation images."
        ),
    ]
    return blocks


_OLD_RULE = (
    "fit wall-clock seconds × devices / 3600 (runs without a `device_hours_rule` tag, from before tlbench "
    "logged it)"
)


def cost_rule(t: pd.DataFrame) -> str:
    """The device-hours rule as the runs logged it, and wall-clock time kept apart."""
    rules = sorted({str(v) for v in t[N.DEVICE_HOURS_RULE].dropna() if str(v) not in {"", "<NA>"}})
    untagged = int((t[N.DEVICE_HOURS_RULE].isna() | (t[N.DEVICE_HOURS_RULE].astype(str) == "")).sum())
    said = "; ".join(f"`{r}`" for r in rules)
    if rules and untagged:
        said += f"; {untagged} run(s): {_OLD_RULE}"
    elif not rules:
        said = _OLD_RULE
    cpu = t[FIT_CPU_SECONDS] if FIT_CPU_SECONDS in t else pd.Series(dtype=float)
    cpu_text = f", {seconds(float(cpu.dropna().sum()))} of fit CPU time" if cpu.notna().any() else ""
    return (
        "**Cost:** device-hours are each run's own compute, so they read the same alone and on a loaded "
        "machine: on a CPU the fit's process CPU seconds ÷ the threads it used, on a GPU wall seconds × "
        f"devices (÷ 3600). As logged: {said}. Wall-clock time is reported apart (`cost/fit_seconds`: "
        f"{seconds(float(t['cost/fit_seconds'].dropna().sum()))} of fitting in all{cpu_text}); it moves with "
        "whatever else ran on the machine."
    )


def tuning_blocks(t: pd.DataFrame, sweep_yaml: str | None) -> list[Block]:
    rows = tuning_protocol(t, sweep_yaml)
    if not rows:
        return []
    budget, tune_at = sweep_budget(sweep_yaml, "trials_per_cell"), sweep_budget(sweep_yaml, "tune_at")
    budget = budget if isinstance(budget, int) else None
    # Arms with nothing to search (as_is) are not tuned by design; with budget.tune_at, one size is
    # tuned and the others run its choice: neither is a smaller tuning budget.
    carried_from = {r.strategy: r.n_per_class for r in rows if r.trials} if tune_at not in (None, "") else {}
    compared = [r for r in rows if r.searched != () and not (r.trials == 0 and r.strategy in carried_from)]
    tuned = [r for r in compared if r.trials]
    counts = {r.trials for r in tuned}
    if not tuned:
        verdict = (
            "No arm was tuned (`budget.trials_per_cell: 0`): every arm ran its strategy's documented "
            "defaults."
            if budget == 0
            else "No tuning trial is recorded: every arm ran its configured settings."
        )
    elif len(counts) == 1 and len(tuned) == len(compared):
        verdict = f"Every arm with something to tune had the same tuning budget: {counts.pop()} trials."
    else:
        low, high = min(r.trials for r in compared), max(r.trials for r in compared)
        verdict = (
            f"Tuning budgets differ between arms ({low}–{high} trials): compare the arms with that in mind."
            + (f" The sweep asked for {budget} per arm." if budget else "")
        )
    if carried_from:
        verdict += f" Tuned at one data size (`budget.tune_at: {tune_at}`); the other sizes ran that choice."

    def trials_text(r: TuningRow) -> str:
        if r.trials:
            return f"{r.trials} ({', '.join(f'{n} {outcome}' for outcome, n in sorted(r.counts.items()))})"
        if r.strategy in carried_from and r.searched != ():
            return f"0 (the choice at {size_label(carried_from[r.strategy])})"
        return "0"

    said: dict[tuple[str, ...] | None, str] = {
        None: "sweep definition not recorded",
        (): "no `search` in the sweep definition",
    }
    table = tuple(
        (size_label(r.n_per_class), r.strategy, trials_text(r),
         said.get(r.searched) or "; ".join(r.searched or ()))
        for r in rows
    )  # fmt: skip
    return [
        Heading("Tuning protocol", level=3),
        Paragraph(verdict + " Tuning chose on validation accuracy; the searched ranges are the sweep's."),
        Table(("Data", "Arm", "Tuning trials", "Searched"), table, align="llrl"),
    ]


def budget_blocks(t: pd.DataFrame, *, tolerance: float) -> list[Block]:
    """ "Trained enough": what doubling the step budget did to validation accuracy, from budget checks."""
    checks = budget_checks(t)
    heading = Heading("Trained enough?", level=3)
    if not checks:
        text = (
            "This study ran no budget check (`role=budget_check`): whether each arm's step budget was enough"
        )
        return [heading, Paragraph(f"{text} is not shown.")]
    done = [c for c in checks if c.change is not None]
    more = [c for c in done if abs(c.change or 0.0) > tolerance]
    if done and not more:
        largest = max(abs(c.change or 0.0) for c in done)
        verdict = (
            f"Doubling the step budget changed validation accuracy by at most {pp(largest)} over "
            f"{len(done)} arm(s): the budgets were enough."
        )
    elif done:
        names = "; ".join(
            f"{c.strategy} at {size_label(c.n_per_class)} ({signed_pp(c.change)})" for c in more
        )
        verdict = (
            f"Doubling the step budget changed validation accuracy by more than {pp(tolerance)} for "
            f"{len(more)} of {len(done)} arm(s): {names}. Those arms may be under-trained (a rise) or "
            "over-fitting with more steps (a fall); their results are less settled than the others'."
        )
    else:
        verdict = "No budget check completed: whether the budgets were enough is not shown."
    failed = [c for c in checks if c.change is None]
    if failed:
        verdict += f" {len(failed)} check(s) did not complete (listed)."
    rows = tuple(
        (size_label(c.n_per_class), c.strategy, f"×{c.factor}", pct(c.base_val),
         pct(c.val) if c.val is not None else c.reason.removeprefix(N.FAILED_PREFIX) or c.outcome,
         signed_pp(c.change) if c.change is not None else "—")
        for c in checks
    )  # fmt: skip
    header = ("Data", "Arm", "Budget", "Validation acc.", "With the larger budget", "Change")
    caption = (
        "Budget checks: a tuned configuration re-run with a multiple of its step budget; validation accuracy "
        "only (test data never decides)."
    )
    return [heading, Paragraph(verdict), Table(header, rows, align="llrrrr", caption=caption)]


def race_blocks(race_json: str | None) -> list[Block]:
    heading = Heading("Final seeds: the race", level=3)
    try:
        race = parse_race(race_json)
    except ValueError as exc:
        return [heading, Callout(f"{exc}: the race is not shown.", "warning")]
    if race is None:
        return []
    cap = f"at most {race.cap} seeds per arm" if race.cap is not None else "no seed cap recorded"
    rounds = f"{race.rounds} round(s)" if race.rounds is not None else "rounds not recorded"
    rule = race.rule or "not recorded"
    rows = tuple(
        (size_label(a.n_per_class), a.label,
         f"{len(a.seeds)} ({', '.join(map(str, a.seeds))})" if a.seeds else "0",
         "—" if a.retired_round is None else str(a.retired_round), a.reason or "—")
        for a in race.arms
    )  # fmt: skip
    text = (
        f"Final seeds ran in rounds, paired across the arms of a data size ({cap}, {rounds}). Rule: {rule}. "
        "Decisions read validation accuracy only; a retired arm's test results are still reported, over the "
        "seeds it got, so arms have different numbers of seeds: each arm's mean and interval use its own "
        "seeds, and paired comparisons pair only seeds both arms have."
    )
    header = ("Data", "Arm", "Seeds run", "Retired in round", "Why")
    caption = "From race.json on the study's parent run."
    return [heading, Paragraph(text), Table(header, rows, align="llrrl", caption=caption)]
