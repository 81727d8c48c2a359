"""The report's "Screen vs training" section: screen scores, their rank agreement with trained accuracy,
a figure, and whether the screen alone would have picked the same backbone.

Computed first (:mod:`tlbench.report.rank_agreement`, :func:`figure_info`), drawn second (:func:`draw`).
A study without ``role=screen`` runs gets no section at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.figure import Figure as MplFigure

from tlbench.report.document import Block, Bullets, Callout, Figure, Heading, Paragraph, Table
from tlbench.report.draw import save, style_for
from tlbench.report.formatting import pct, pp, si
from tlbench.report.rank_agreement import (
    BEST_SCOPE,
    SCREEN_SCORES,
    Agreement,
    Pick,
    agreements,
    picks,
    ranking_table,
    scopes,
    screen_table,
    trained_accuracy,
)
from tlbench.tracking.study_reader import RunRecord

FIGURE_NAME = "screen_vs_training"
CSS_DPI = 105


@dataclass(frozen=True)
class ScorePanel:
    score: str
    label: str
    points: tuple[tuple[str, str, float, float], ...]  # (strategy, backbone, screen score, test acc)


@dataclass(frozen=True)
class ScreenFigureInfo:
    title: str
    panels: tuple[ScorePanel, ...]


def _short(backbone: str) -> str:
    return backbone.removeprefix("tf_").replace("efficientnet_", "effnet-")


def figure_info(screen: pd.DataFrame, trained: pd.DataFrame) -> ScreenFigureInfo | None:
    """One panel per logged screen score: every (backbone, strategy) at (score, mean test accuracy)."""
    panels = []
    for score, label in SCREEN_SCORES.items():
        if score not in screen or screen[score].isna().all():
            continue
        merged = trained.merge(screen[["backbone", score]], on="backbone").dropna(subset=[score])
        points = tuple(
            (str(r.strategy), str(r.backbone), float(r.score), float(r.test_acc))
            for r in merged.rename(columns={score: "score"}).itertuples()
        )
        if points:
            panels.append(ScorePanel(score, label, points))
    if not panels:
        return None
    return ScreenFigureInfo("Screen score against final test accuracy (one line per strategy)", tuple(panels))


def draw(info: ScreenFigureInfo) -> MplFigure:
    count = len(info.panels)
    ncols = min(3, count)
    nrows = math.ceil(count / ncols)
    with matplotlib.rc_context({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False}):
        figure = MplFigure(figsize=(1.6 + 3.6 * ncols, 0.6 + 3.0 * nrows), layout="constrained", dpi=100)
        axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
        strategies = sorted({p[0] for panel in info.panels for p in panel.points})
        for ax, panel in zip(axes, info.panels, strict=False):
            for index, strategy in enumerate(strategies):
                pts = sorted((x, y, b) for s, b, x, y in panel.points if s == strategy)
                if not pts:
                    continue
                colour, marker = style_for(strategy, index)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colour, marker=marker, label=strategy)
                for x, y, backbone in pts:
                    ax.annotate(
                        _short(backbone), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7
                    )
            ax.set_xlabel(panel.label)
            ax.set_ylabel("final test accuracy")
            ax.grid(True, alpha=0.3, linewidth=0.6)
        for ax in axes[count:]:
            ax.set_visible(False)
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            figure.legend(handles, labels, loc="outside right upper", frameon=False)
        figure.suptitle(info.title, fontsize=11, fontweight="bold")
    return figure


def _num(value: float, digits: int = 2) -> str:
    return "—" if not math.isfinite(value) else f"{value:+.{digits}f}"


def _score_cell(value: float, score: str) -> str:
    if not math.isfinite(value):
        return "—"
    return f"{value:.3f}" if score == "screen/logme" else pct(value)


def _screen_rows(screen: pd.DataFrame, trained: pd.DataFrame, shown: Sequence[str]) -> list[tuple[str, ...]]:
    best = trained.sort_values("test_acc", ascending=False).drop_duplicates("backbone").set_index("backbone")
    rows = []
    for r in screen.itertuples(index=False):
        values = dict(zip(screen.columns, r, strict=True))
        name = str(values["backbone"])
        trained_cell = (
            f"{pct(float(best.loc[name, 'test_acc']))} ({best.loc[name, 'strategy']})"
            if name in best.index
            else "—"
        )
        rows.append(
            (
                name,
                str(values["resolution"]),
                *(_score_cell(float(values[s]), s) for s in shown),
                si(float(values["cost/forward_flops"]), "FLOPs"),
                f"{float(values['cost/screen_seconds']):.1f} s",
                trained_cell,
            )
        )
    return rows


def _agreement_rows(
    found: list[Agreement], shown: Sequence[str], order: Sequence[str]
) -> list[tuple[str, ...]]:
    table = {(a.score, a.scope): a for a in found}
    rows = []
    for scope in order:
        cells = [table.get((s, scope)) for s in shown]
        n = max((c.n for c in cells if c is not None), default=0)
        if n == 0:
            continue
        rows.append(
            (scope, str(n), *(f"{_num(c.kendall_tau)} / {_num(c.spearman_rho)}" if c else "—" for c in cells))
        )
    return rows


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
    """The screen as a phase of the study: kept and dropped backbones, and the screen's ranking beside
    training's with Kendall's τ over the backbones that were trained (empty for a stand-alone screen)."""
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
        blocks.append(
            Bullets(
                tuple(
                    f"`{r.backbone}`: {r.screen_reason or 'no reason recorded'}" for r in dropped.itertuples()
                )
            )
        )
    ranked = [s for s in shown if f"rank:{s}" in table]
    blocks.append(
        Table(
            (
                "backbone",
                "screen",
                *(f"rank by {SCREEN_SCORES[s]}" for s in ranked),
                "trained rank",
                "trained best",
            ),
            tuple(
                (
                    str(row["backbone"]),
                    _status(row),
                    *(_rank(row[f"rank:{s}"]) for s in ranked),
                    _rank(row["trained_rank"]),
                    "—"
                    if pd.isna(row["trained_acc"])
                    else f"{pct(float(row['trained_acc']))} ({row['trained_strategy']})",
                )
                for _, row in table.iterrows()
            ),
            align=("l", "l", *("r" for _ in ranked), "r", "r"),
            caption="Ranks: 1 = best; the screen ranks every screened backbone, training only those it "
            "trained (by the best strategy's mean final test accuracy).",
        )
    )
    trained_n = int(table["trained_acc"].notna().sum())
    taus = [a for a in agreements(screen, trained) if a.scope == BEST_SCOPE]
    if trained_n < 2 or not taus:
        blocks.append(
            Paragraph(
                "Fewer than two backbones were trained: there is no trained ranking to set the "
                "screen's against (Kendall's τ needs two)."
            )
        )
    else:
        items = ", ".join(f"{SCREEN_SCORES[a.score]} {_num(a.kendall_tau)}" for a in taus)
        blocks.append(
            Paragraph(
                "**Kendall's τ-b between the screen's ranking and training's**, over the "
                f"{trained_n} backbones that were trained: {items}. With {trained_n} backbones τ takes "
                "few values" + (" (±1 only)." if trained_n == 2 else ".")
            )
        )
    return blocks


def screen_blocks(screen: pd.DataFrame, trained: pd.DataFrame, figure: Figure | None) -> list[Block]:
    """The section's blocks from the screen table and the trained accuracies (pure)."""
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
            align=("l", "r", *("r" for _ in shown), "r", "r", "r"),
            caption="Screen scores per backbone; 'trained best' = mean final test accuracy of the backbone's "
            "best strategy in this study.",
        ),
    ]
    blocks += phase_blocks(screen, trained, shown)
    if trained.empty or not set(trained["backbone"]) & set(screen["backbone"]):
        blocks.append(
            Callout(
                "no completed final runs of the screened backbones: nothing to compare the screen with",
                "warning",
            )
        )
        return blocks
    found = agreements(screen, trained)
    rows = _agreement_rows(found, shown, scopes(trained))
    blocks.append(
        Table(
            ("scope", "n", *(SCREEN_SCORES[s] for s in shown)),
            tuple(rows),
            align=("l", "r", *("r" for _ in shown)),
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
        blocks.append(
            Paragraph(f"**Would the screen alone have picked the same backbone?** {verdict.capitalize()}.")
        )
        blocks.append(Bullets(tuple(_pick_text(p) for p in chosen)))
    if figure is not None:
        blocks.append(figure)
    return blocks


def screen_section(
    runs: Sequence[RunRecord], trials: pd.DataFrame, *, directory: Path, figures_dir: str
) -> tuple[list[Block], list[Path]]:
    """Blocks and written figure files of the section; ``([], [])`` for a study without screen runs."""
    screen = screen_table(runs)
    if screen.empty:
        return [], []
    trained = trained_accuracy(trials)
    info = figure_info(screen, trained)
    files: list[Path] = []
    block = None
    if info is not None:
        drawn = draw(info)
        png, svg = save(drawn, directory / figures_dir, FIGURE_NAME)
        files = [png, svg]
        block = Figure(
            title="Screen vs training",
            png=png.relative_to(directory).as_posix(),
            svg=svg.relative_to(directory).as_posix(),
            caption="Each point is a (backbone, strategy) cell: the backbone's screen score against the "
            "cell's mean final test accuracy. Lines that rise left to right mean the screen ranked "
            "backbones as training did.",
            width=round(float(drawn.get_figwidth()) * CSS_DPI),
        )
    return screen_blocks(screen, trained, block), files
