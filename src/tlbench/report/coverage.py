"""What a study lacks: failed final runs, running trials, cells without (enough) final seeds (pure).

Pruned tuning trials are normal (pruning is the protocol); they are listed under Data coverage but do not
make a study "incomplete".
"""

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
    # Pruned tuning trials are the protocol working, and a failed tuning trial is retried or leaves a
    # cell without a final run (reported below): only final runs that failed and unfinished runs count.
    final = trials[trials["role"] == "final"]
    failed = int((final["outcome"] == "failed").sum())
    if failed:
        out.append(f"{failed} final run(s) failed")
    running = int((trials["outcome"] == "running").sum())
    if running:
        out.append(f"{running} trial(s) running")
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
