"""The report as plain blocks, how numbers read in it (one place, so tables, text and figures agree),
and its renderings: Markdown, one self-contained HTML page, the summary table as booktabs LaTeX.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from tlbench.strategies import STRATEGIES

# --- how numbers and names read -----------------------------------------------------------------------------

STRATEGY_ORDER = tuple(STRATEGIES)  # the registry's order
_SI = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def size_key(n_per_class: str) -> float:
    """Sort key of a data size label: numbers ascending, then ``all``, then anything unparsable."""
    if n_per_class == "all":
        return math.inf
    try:
        return float(n_per_class)
    except ValueError:
        return math.nan


def sorted_sizes(labels: object) -> list[str]:
    unique = {str(x) for x in labels}  # type: ignore[attr-defined]
    return sorted(unique, key=lambda s: (math.isnan(size_key(s)), size_key(s), s))


def sorted_strategies(names: object) -> list[str]:
    unique = {str(x) for x in names}  # type: ignore[attr-defined]
    rank = {name: i for i, name in enumerate(STRATEGY_ORDER)}
    # an arm "<strategy>, <factor value>" (report.tables.label_arms) sorts with its strategy
    return sorted(unique, key=lambda s: (rank.get(s.split(", ")[0], len(rank)), s))


def size_label(n_per_class: str) -> str:
    return "all data" if n_per_class == "all" else f"n={n_per_class}/class"


def size_slug(n_per_class: str) -> str:
    """The data size in MLflow metric names: ``n20``, ``nall``."""
    return "n" + "".join(c if c.isalnum() else "_" for c in n_per_class)


def pct(x: float | None, digits: int = 1) -> str:
    """An accuracy in percent (``91.2%``)."""
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.{digits}f}%"


def pp(x: float | None, digits: int = 1) -> str:
    """An accuracy difference in percentage points (``1.0 pp``)."""
    return pct(x, digits).replace("%", " pp")


def signed_pp(x: float | None, digits: int = 1) -> str:
    """A signed difference in percentage points with a true minus sign (``+3.3 pp``, ``−6.0 pp``)."""
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:+.{digits}f} pp".replace("-", "−")


def sig(x: float | None, digits: int = 3) -> str:
    """A cost with ``digits`` significant figures, without scientific notation for ordinary values."""
    if x is None or math.isnan(x):
        return "n/a"
    if x == 0:
        return "0"
    if 1e-4 <= abs(x) < 1e6:
        decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
        return f"{x:,.{decimals}f}"
    return f"{x:.{digits - 1}e}"


def si(x: float | None, unit: str = "", digits: int = 3) -> str:
    """A large count with an SI prefix (``1.23 TFLOPs``, ``5.3 M``)."""
    if x is None or math.isnan(x):
        return "n/a"
    for scale, prefix in _SI:
        if abs(x) >= scale:
            return f"{x / scale:.{digits}g} {prefix}{unit}".rstrip()
    return f"{x:.{digits}g} {unit}".rstrip()


def seconds(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    if x < 120:
        return f"{x:.1f} s"
    if x < 7200:
        return f"{x / 60:.1f} min"
    return f"{x / 3600:.2f} h"


# --- blocks -------------------------------------------------------------------------------------------------
# Text may carry ``**bold**`` and ```code```, which both renderers understand; all else is literal.


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2

    @property
    def anchor(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.text.lower()).strip("-")


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Callout:
    """A note the reader must not miss (missing data, a figure not in this study)."""

    text: str
    kind: str = "note"  # note | warning


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: str = ""  # "l" | "r" per column, e.g. "llrr"; default left
    caption: str = ""
    highlight: tuple[int, ...] = ()  # rows to emphasise (the best per data size)


@dataclass(frozen=True)
class Figure:
    title: str
    png: str  # path relative to the report directory
    svg: str
    caption: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    width: int = 0  # CSS pixels at the figure's print size (inches x 96), so all figures share one scale


@dataclass(frozen=True)
class Code:
    text: str
    language: str = ""


Block = Heading | Paragraph | Bullets | Callout | Table | Figure | Code


# --- Markdown (GitHub flavour: pipe tables, figures as relative PNG links) ----------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> str:
    align = table.align or "l" * len(table.header)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [
        "| " + " | ".join(_cell(h) for h in table.header) + " |",
        "| " + " | ".join(rule) + " |",
        *("| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows),
    ]
    if table.caption:
        lines += ["", f"*{table.caption}*"]
    return "\n".join(lines)


def _md_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Paragraph):
        return block.text
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Callout):
        return f"> **{'Warning' if block.kind == 'warning' else 'Note'}:** {block.text}"
    if isinstance(block, Table):
        return _md_table(block)
    if isinstance(block, Figure):
        lines = [f"![{block.title}]({block.png})", "", f"*{block.caption}* ([SVG]({block.svg}))"]
        lines += [f"\n> {note}" for note in block.notes]
        return "\n".join(lines)
    if isinstance(block, Code):
        return f"```{block.language}\n{block.text.rstrip()}\n```"
    raise TypeError(f"unknown block {block!r}")


def to_markdown(blocks: Sequence[Block]) -> str:
    return "\n\n".join(_md_block(b) for b in blocks) + "\n"


# --- one self-contained HTML page ---------------------------------------------------------------------------
# Self-contained so the page can be mailed, attached to an MLflow run or opened offline and still show
# every figure.

_CSS = """
body { font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1d2430; background: #fff; margin: 0; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.4em; }
h2 { font-size: 1.3em; margin-top: 2em; padding-bottom: 0.2em; border-bottom: 1px solid #d8dee8; }
h3 { font-size: 1.08em; margin-top: 1.5em; }
code { font: 0.9em ui-monospace, "DejaVu Sans Mono", monospace; background: #f2f4f8; padding: 0 3px;
       border-radius: 3px; }
pre { background: #f6f8fa; padding: 12px; overflow-x: auto; border-radius: 6px; }
pre code { background: none; padding: 0; }
table { border-collapse: collapse; margin: 12px 0; font-size: 0.92em; }
th, td { border-bottom: 1px solid #e3e7ee; padding: 5px 10px; vertical-align: top; }
th { background: #f3f5f9; text-align: left; border-bottom: 2px solid #c9d1de; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #eef7ee; }
.caption { color: #4a5568; font-size: 0.9em; margin: 4px 0 0; }
figure { margin: 18px 0 28px; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e7ee; border-radius: 4px; }
.callout { border-left: 4px solid #3b82f6; background: #eff5ff; padding: 8px 12px; margin: 12px 0;
           border-radius: 0 4px 4px 0; }
.callout.warning { border-color: #d97706; background: #fff7e8; }
nav.toc { background: #f7f8fb; border: 1px solid #e3e7ee; border-radius: 6px; padding: 6px 16px;
          display: inline-block; }
nav.toc ol { margin: 6px 0; padding-left: 20px; }
"""


def inline(text: str) -> str:
    """Escape, then turn ``**bold**`` and ```code``` into tags."""
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)


def _html_table(table: Table) -> str:
    align = table.align or "l" * len(table.header)
    head = "".join(f'<th class="{a}">{inline(h)}</th>' for h, a in zip(table.header, align, strict=True))
    rows = []
    for index, row in enumerate(table.rows):
        best = ' class="best"' if index in table.highlight else ""
        cells = "".join(f'<td class="{a}">{inline(c)}</td>' for c, a in zip(row, align, strict=True))
        rows.append(f"<tr{best}>{cells}</tr>")
    caption = f'<p class="caption">{inline(table.caption)}</p>' if table.caption else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{caption}"


def _figure(block: Figure, images: Mapping[str, bytes]) -> str:
    data = images.get(block.png)
    if data is None:
        return f'<div class="callout warning">Figure {inline(block.title)} could not be embedded.</div>'
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    notes = "".join(f'<p class="caption"><strong>Note:</strong> {inline(n)}</p>' for n in block.notes)
    width = f' width="{block.width}"' if block.width else ""
    return (
        f'<figure><img src="{src}"{width} alt="{html.escape(block.title)}">'
        f'<figcaption class="caption">{inline(block.caption)} '
        f'(also as <a href="{html.escape(block.svg)}">SVG</a>)</figcaption>{notes}</figure>'
    )


def _html_block(block: Block, images: Mapping[str, bytes]) -> str:
    if isinstance(block, Heading):
        return f'<h{block.level} id="{block.anchor}">{inline(block.text)}</h{block.level}>'
    if isinstance(block, Paragraph):
        return f"<p>{inline(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{inline(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Callout):
        label = "Warning" if block.kind == "warning" else "Note"
        return f'<div class="callout {block.kind}"><strong>{label}:</strong> {inline(block.text)}</div>'
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Figure):
        return _figure(block, images)
    if isinstance(block, Code):
        return f"<pre><code>{html.escape(block.text.rstrip())}</code></pre>"
    raise TypeError(f"unknown block {block!r}")


def _toc(blocks: Sequence[Block]) -> str:
    items = [
        f'<li><a href="#{b.anchor}">{inline(b.text)}</a></li>'
        for b in blocks
        if isinstance(b, Heading) and b.level == 2
    ]
    return f'<nav class="toc"><strong>Contents</strong><ol>{"".join(items)}</ol></nav>' if items else ""


def to_html(blocks: Sequence[Block], *, images: Mapping[str, bytes]) -> str:
    """``images`` maps each figure's PNG path to its bytes (embedded, so the page stands alone)."""
    title = next((b.text for b in blocks if isinstance(b, Heading) and b.level == 1), "tlbench report")
    body = [_html_block(block, images) for block in blocks]
    first_h2 = next((i for i, b in enumerate(blocks) if isinstance(b, Heading) and b.level == 2), len(blocks))
    body.insert(first_h2, _toc(blocks))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title.replace('`', ''))}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body><main>\n{chr(10).join(body)}\n</main></body>\n</html>\n"
    )


# --- the summary table as booktabs LaTeX, ready to \input ---------------------------------------------------

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
        size_cell = "all" if size == "all" else f"$n={escape(size)}$"
        for _, row in summary[summary["n_per_class"] == size].iterrows():
            cells = [
                size_cell, escape(str(row["strategy"])), _accuracy(row), str(int(row["seeds"])),
                sig(float(row["device_hours"])), escape(si(float(row["train_flops"]))),
                escape(si(float(row["trainable_params"]))), *_paired(row),
            ]  # fmt: skip
            lines.append("    " + " & ".join(cells) + r" \\")
    if not sizes:
        lines.append(r"    \multicolumn{9}{c}{no completed final runs} \\")
    lines += [r"    \bottomrule", r"  \end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)
