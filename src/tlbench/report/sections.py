"""The report's sections as blocks, from already-computed tables (pure: no I/O, no drawing)."""

from __future__ import annotations

import math

import pandas as pd

from tlbench.report.coverage import problems
from tlbench.report.document import Block, Bullets, Callout, Code, Figure, Heading, Paragraph, Table
from tlbench.report.figure_info import Missing
from tlbench.report.formatting import pct, pp, si, sig, size_label
from tlbench.report.inputs import ReportInputs
from tlbench.report.recommend import frontier_text, recommendation_text
from tlbench.report.summarize import best_tuning_val, failed_configurations


def _unique(values: pd.Series) -> str:
    seen = sorted({str(v) for v in values.dropna() if str(v) != ""})
    return ", ".join(f"`{v}`" for v in seen) if seen else "not recorded"


def header(inp: ReportInputs) -> list[Block]:
    trials = inp.trials
    n_tune, n_final = int((trials["role"] == "tune").sum()), int((trials["role"] == "final").sum())
    facts = (
        f"Sweep `{inp.sweep or 'unknown'}` · dataset {_unique(trials['dataset'])} · backbone "
        f"{_unique(trials['backbone'])} (weights {_unique(trials['weights'])}) · {len(trials)} trials "
        f"({n_tune} tuning, {n_final} final). Built from MLflow experiment `{inp.study}` "
        f"(id {inp.experiment_id}, parent run `{inp.parent_run_id or 'none'}`) in `{inp.tracking_uri}`; "
        "nothing was re-trained."
    )
    blocks: list[Block] = [
        Heading(f"Study `{inp.study}`: transfer-learning trade-offs", level=1),
        Paragraph(facts),
        Paragraph(
            "Which accuracy is which: the summary, the recommendation, the trade-off and data-scaling "
            "figures use **test accuracy of final runs** (each strategy's tuned configuration re-trained on "
            "fresh seeds). LR sensitivity and the tuning trade-off use **validation accuracy of tuning "
            "trials**; test accuracy never influenced tuning."
        ),
    ]
    issues = problems(inp)
    if issues:
        blocks.append(
            Callout(
                "This study is incomplete: " + "; ".join(issues) + ". Details under Data coverage.", "warning"
            )
        )
    return blocks


def _failed_arms(inp: ReportInputs) -> list[Block]:
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


def recommendation_section(inp: ReportInputs) -> list[Block]:
    blocks: list[Block] = [Heading("Recommendation")]
    if not inp.recommendations:
        return [
            *blocks,
            Callout("No completed final run in this study: there is nothing to recommend.", "warning"),
            *_failed_arms(inp),
        ]
    blocks.append(
        Paragraph(
            f"For each data size: the cheapest strategy ({inp.unit.unit} per run) that is not credibly worse "
            f"than the most accurate: the 95% interval of its paired difference to the best (same seeds, "
            f"same test images; see Paired comparisons) reaches above **−{pp(inp.tolerance)}** (`--tolerance "
            f"{inp.tolerance:g}`). Where no two strategies share two seeds, the cheapest whose mean is "
            f"within {pp(inp.tolerance)} of the best mean. Accuracies are those of the summary table."
        )
    )
    blocks.append(
        Bullets(
            tuple(
                recommendation_text(r, tolerance=inp.tolerance, unit=inp.unit.unit)
                for r in inp.recommendations
            )
        )
    )
    blocks += _failed_arms(inp)
    blocks.append(Heading(f"Accuracy bought per extra {inp.unit.unit[:-1]}", level=3))
    blocks.append(
        Paragraph(
            "Along each size's Pareto frontier (strategies that no other strategy beats on both accuracy "
            "and cost):"
        )
    )
    blocks.append(Bullets(tuple(frontier_text(r, unit=inp.unit.unit) for r in inp.recommendations)))
    if inp.unit.note:
        blocks.append(Callout(inp.unit.note, "warning"))
    return blocks


_SUMMARY_CAPTION = (
    "Final runs only (role=final, status=completed). ★ best mean per data size. CI: Student-t over seeds, "
    "n−1 degrees of freedom; a single seed has none. Costs are means per run. Exact values: results.csv; "
    "LaTeX: summary.tex."
)


def _acc_cell(row: pd.Series) -> str:
    ci = float(row["acc_ci"])
    text = f"{pct(row['acc_mean'])} (single seed)" if math.isnan(ci) else f"{pct(row['acc_mean'])} ± {pp(ci)}"
    return f"**{text}** ★" if bool(row["best"]) else text


def summary_section(inp: ReportInputs) -> list[Block]:
    blocks: list[Block] = [Heading("Summary")]
    summary = inp.summary
    if summary.empty:
        return [*blocks, Callout("No completed final run with a test accuracy: no summary.", "warning")]
    rows = tuple(
        (
            size_label(str(r["n_per_class"])), str(r["strategy"]), _acc_cell(r), str(int(r["seeds"])),
            sig(float(r["device_hours"])), si(float(r["train_flops"])), si(float(r["trainable_params"])),
        )
        for _, r in summary.iterrows()
    )  # fmt: skip
    header = (
        "Data",
        "Strategy",
        "Test accuracy (mean ± 95% CI)",
        "Seeds",
        inp.unit.label,
        "Train FLOPs/run",
        "Trainable params",
    )
    blocks.append(
        Table(
            header,
            rows,
            align=("l", "l", "r", "r", "r", "r", "r"),
            highlight=tuple(i for i, best in enumerate(summary["best"]) if bool(best)),
            caption=_SUMMARY_CAPTION,
        )
    )
    tuning = best_tuning_val(inp.trials)
    if not tuning.empty:
        blocks.append(Heading("Tuning", level=3))
        blocks.append(
            Table(
                ("Data", "Strategy", "Completed tuning trials", "Best validation accuracy"),
                tuple(
                    (
                        size_label(str(r["n_per_class"])),
                        str(r["strategy"]),
                        str(int(r["trials"])),
                        pct(r["val_acc"]),
                    )
                    for _, r in tuning.iterrows()
                ),
                align=("l", "l", "r", "r"),
                caption="Validation accuracy chose each strategy's configuration; it is not a test result.",
            )
        )
    return blocks


def figures_section(inp: ReportInputs) -> list[Block]:
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


def appendix(inp: ReportInputs, files: list[str]) -> list[Block]:
    blocks: list[Block] = [Heading("Files"), Bullets(tuple(files))]
    if inp.sweep_yaml:
        blocks += [
            Heading("Sweep definition (`sweep.yaml` of the parent run)", level=3),
            Code(inp.sweep_yaml, "yaml"),
        ]
    return blocks
