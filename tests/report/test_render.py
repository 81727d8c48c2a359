from __future__ import annotations

import base64

import pandas as pd

from tlbench.report.render import (
    Callout,
    Code,
    Figure,
    Heading,
    Paragraph,
    Table,
    escape,
    inline,
    summary_tex,
    to_html,
    to_markdown,
)

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
BLOCKS = [
    Heading("Study `x`", level=1),
    Heading("Summary"),
    Paragraph("a **bold** word, `code` and <script>alert(1)</script>"),
    Table(
        ("Strategy", "Acc"),
        (("linear_probe", "**82% ± 1 pp** ★"), ("a|b", "1")),
        align="lr",
        highlight=(0,),
    ),
    Callout("Not in this study: freeze depth"),
    Figure("Trade-off", "figures/t.png", "figures/t.svg", "Test accuracy of final runs.", width=500),
    Code("name: smoke\n"),
]


def test_inline_marks_and_escaping() -> None:
    # the two marks become tags; anything else is text, so a param value cannot inject HTML
    assert inline("**a** `b<c>`") == "<strong>a</strong> <code>b&lt;c&gt;</code>"


def test_markdown() -> None:
    md = to_markdown(BLOCKS)
    assert "# Study `x`" in md and "| --- | ---: |" in md  # headings, right-aligned numbers
    assert "a\\|b" in md  # a pipe in a cell is escaped, the table keeps its columns
    assert "![Trade-off](figures/t.png)" in md and "> **Note:** Not in this study" in md


def test_html_is_self_contained() -> None:
    page = to_html(BLOCKS, images={"figures/t.png": PNG})
    # the figure is embedded, not linked; no script, no external resource
    assert "data:image/png;base64," + base64.b64encode(PNG).decode() in page
    assert 'width="500"' in page  # shown at its print size, like every other figure
    assert "<script>" not in page and 'src="http' not in page and "<link" not in page
    # the best row is highlighted, the contents list links the sections
    assert '<tr class="best">' in page and '<a href="#summary">Summary</a>' in page
    assert "<title>Study x</title>" in page


def test_html_says_when_a_figure_is_missing() -> None:
    # an image that cannot be embedded is reported in the page, not silently dropped
    assert "could not be embedded" in to_html(BLOCKS, images={})


def test_latex_table() -> None:
    summary = pd.DataFrame(
        [
            {"n_per_class": "10", "strategy": "linear_probe", "seeds": 3, "acc_mean": 0.82, "acc_ci": 0.012,
             "device_hours": 0.001, "train_flops": 1e12, "trainable_params": 1e3, "best": True},
            {"n_per_class": "all", "strategy": "scratch", "seeds": 1, "acc_mean": 0.5, "acc_ci": float("nan"),
             "device_hours": 0.002, "train_flops": 2e12, "trainable_params": 5e5, "best": True},
        ]
    )  # fmt: skip
    tex = summary_tex(summary, study="my_study", cost_label="GPU-hours")
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex  # booktabs rules
    assert r"linear\_probe & \textbf{82.0 $\pm$ 1.2}" in tex  # escaped name, best in bold, CI in points
    assert r"50.0$^\dagger$" in tex  # single seed: a dagger instead of an interval
    assert "Study my\\_study" in tex and "GPU-hours" in tex


def test_latex_escape() -> None:
    assert escape("a_b & 50% #1") == r"a\_b \& 50\% \#1"
