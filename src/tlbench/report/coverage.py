"""What a study lacks: failed final runs, running trials, cells without (enough) final seeds (pure).

Pruned tuning trials are normal (pruning is the protocol); they are listed under Data coverage but do not
make a study "incomplete".
"""

from __future__ import annotations

import re

from tlbench.report.document import Block, Bullets, Callout, Heading, Paragraph, Table
from tlbench.report.formatting import size_label
from tlbench.report.inputs import ReportInputs
from tlbench.report.summarize import (
    FailedConfiguration,
    cell_gaps,
    failed_configurations,
    failures,
    outcome_counts,
)


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
    failed = int(((final["outcome"] == "failed") & ~final["collapsed"]).sum())
    if failed:
        out.append(f"{failed} final run(s) failed")
    interrupted = int((final["outcome"] == "interrupted").sum())
    if interrupted:
        out.append(f"{interrupted} final run(s) interrupted")
    running = int((trials["outcome"] == "running").sum())
    if running:
        out.append(f"{running} trial(s) running")
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
    interrupted = int((trials["outcome"] == "interrupted").sum())
    if interrupted:
        items.append(
            f"{interrupted} trial(s) interrupted (stopped, not failed): `make sweep` resumes the study and "
            "redoes them."
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


def _roles(runs: dict[str, int]) -> str:
    words = {"final": "final seed(s)", "tune": "tuning trial(s)", "budget_check": "budget check(s)"}
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
    if f.runs.get("final"):
        return text + f". Its {f.finals_left} other final seed(s) are reported; the collapsed ones are not."
    return text + ". Never selected."


def failed_section(inp: ReportInputs) -> list[Block]:
    """Runs whose result is degenerate: a failure of the configuration, never a finding about the arm."""
    found = failed_configurations(inp.trials)
    if not found:
        return []
    return [
        Heading("Failed configurations"),
        Paragraph(
            "A run **collapsed** when its validation accuracy ended within noise of chance or its training "
            "loss ended above where it started (the trial's own check; for runs of older studies, "
            "validation accuracy within two standard errors of chance). A collapsed run is a failed "
            "configuration: it is excluded from the summary, the paired comparisons, the figures and the "
            "recommendation, and an arm whose every final seed collapsed is reported here, never as "
            '"worse".'
        ),
        Bullets(tuple(failed_text(f) for f in found)),
    ]
