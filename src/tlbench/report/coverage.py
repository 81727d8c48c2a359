"""What a study lacks: failed, pruned and running trials, cells without (enough) final seeds (pure)."""

from __future__ import annotations

from tlbench.report.document import Block, Bullets, Callout, Heading, Paragraph, Table
from tlbench.report.formatting import size_label
from tlbench.report.inputs import ReportInputs
from tlbench.report.summarize import cell_gaps, failures, outcome_counts


def problems(inp: ReportInputs) -> list[str]:
    """Short statements of what is missing or partial; empty for a complete study."""
    trials = inp.trials
    out = []
    if inp.parent_run_id is None:
        out.append("the study has no parent run (`role=study`): the report could not be attached to MLflow")
    if inp.extra_parents:
        out.append(f"{inp.extra_parents + 1} parent runs found; the oldest was used")
    counts = trials["outcome"].value_counts()
    for outcome in ("failed", "pruned", "running"):
        if counts.get(outcome, 0):
            out.append(f"{counts[outcome]} trial(s) {outcome}")
    gaps = cell_gaps(trials)
    missing = [f"{g.strategy} at {size_label(g.n_per_class)}" for g in gaps if g.final_completed == 0]
    single = [f"{g.strategy} at {size_label(g.n_per_class)}" for g in gaps if g.final_completed == 1]
    if missing:
        out.append("no completed final run for " + ", ".join(missing))
    if single and len(single) == len(inp.summary):
        out.append("a single final seed everywhere, so no confidence intervals")
    elif single:
        out.append("a single final seed (no confidence interval) for " + ", ".join(single))
    return out


def coverage_section(inp: ReportInputs) -> list[Block]:
    trials = inp.trials
    blocks: list[Block] = [Heading("Data coverage")]
    if trials.empty:
        return [*blocks, Callout("The study has no trial runs yet.", "warning")]
    counts = outcome_counts(trials)
    blocks.append(
        Table(
            ("Role", *counts.columns),
            tuple((str(role), *(str(v) for v in row)) for role, row in counts.iterrows()),
            align=("l", *("r",) * len(counts.columns)),
            caption="Trials by role and outcome. Pruned and failed trials count in the compute totals, "
            "never in accuracies.",
        )
    )
    items = [
        f"{role} trial failed ({strategy}, {size_label(size)}): {status.removeprefix('failed: ')}"
        for role, strategy, size, status in failures(trials)
    ]
    pruned = int((trials["outcome"] == "pruned").sum())
    if pruned:
        items.append(
            f"{pruned} trial(s) pruned early: their validation accuracy is partial, so the figures leave "
            "them out."
        )
    running = int((trials["outcome"] == "running").sum())
    if running:
        items.append(
            f"{running} trial(s) still running or abandoned: re-run `make report` when the sweep is done."
        )
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
        blocks.append(Bullets(tuple(items)))
    else:
        blocks.append(
            Paragraph("Every trial completed and every strategy × data size has at least two final seeds.")
        )
    return blocks
