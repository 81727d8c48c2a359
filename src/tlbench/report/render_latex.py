"""The summary table as a booktabs LaTeX table, ready to ``\\input`` into a paper."""

from __future__ import annotations

import math

import pandas as pd

from tlbench.report.formatting import si, sig, sorted_sizes

_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}  # fmt: skip


def escape(text: str) -> str:
    return "".join(_ESCAPES.get(c, c) for c in text)


def _accuracy(row: pd.Series) -> str:
    mean = f"{100 * row['acc_mean']:.1f}"
    ci = row["acc_ci"]
    text = f"{mean}$^\\dagger$" if math.isnan(ci) else f"{mean} $\\pm$ {100 * ci:.1f}"
    return f"\\textbf{{{text}}}" if bool(row["best"]) else text


def _paired(row: pd.Series) -> list[str]:
    """Paired difference to the best with its 95% interval, and P(best); blank when not compared."""
    if pd.isna(row.get("paired_best", math.nan)):
        return ["", ""]
    p_best = row.get("p_best", math.nan)
    chance = "--" if pd.isna(p_best) else f"{float(p_best):.2f}"  # no P(best): paired with the best alone
    low, high = row.get("paired_diff_low", math.nan), row.get("paired_diff_high", math.nan)
    if pd.isna(low) or pd.isna(high):
        return ["best", chance]
    diff = f"{100 * float(row['paired_diff']):+.1f}"
    return [f"${diff}$ [${100 * float(low):+.1f}$, ${100 * float(high):+.1f}$]", chance]


def _size(label: str) -> str:
    return "all" if label == "all" else f"$n={escape(label)}$"


def summary_tex(summary: pd.DataFrame, *, study: str, cost_label: str) -> str:
    """One row per strategy × data size; the best mean per size in bold; † marks a single seed."""
    label = "".join(c if c.isalnum() else "-" for c in study)
    lines = [
        f"% tlbench report, study {study}: needs \\usepackage{{booktabs}}; numbers as in results.csv",
        r"\begin{table}[t]",
        r"  \centering",
        f"  \\caption{{Study {escape(study)}: test accuracy (\\%, mean $\\pm$ 95\\% CI over final seeds, "
        f"Student-$t$) and cost per run. Best mean per data size in bold; $^\\dagger$single seed, no CI. "
        f"$\\Delta$: paired difference to the best strategy of the size (pp), 95\\% interval over seeds "
        f"and test images; P(best): probability of being the best.}}",
        f"  \\label{{tab:tlbench-{label}}}",
        r"  \begin{tabular}{llrrrrrrr}",
        r"    \toprule",
        f"    Images/class & Strategy & Test acc. & Seeds & {escape(cost_label)} & Train FLOPs & Trainable"
        r" & $\Delta$ vs best [95\% CI] & P(best) \\",
        r"    \midrule",
    ]
    sizes = sorted_sizes(summary["n_per_class"]) if not summary.empty else []
    for i, size in enumerate(sizes):
        if i:
            lines.append(r"    \midrule")
        for _, row in summary[summary["n_per_class"] == size].iterrows():
            cells = [
                _size(size), escape(str(row["strategy"])), _accuracy(row), str(int(row["seeds"])),
                sig(float(row["device_hours"])), escape(si(float(row["train_flops"]))),
                escape(si(float(row["trainable_params"]))), *_paired(row),
            ]  # fmt: skip
            lines.append("    " + " & ".join(cells) + r" \\")
    if not sizes:
        lines.append(r"    \multicolumn{9}{c}{no completed final runs} \\")
    lines += [r"    \bottomrule", r"  \end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)
