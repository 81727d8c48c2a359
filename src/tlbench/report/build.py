"""Build a study's report: read MLflow, compute, draw, write ``<out>/<study>/``, attach it to the study.

Everything in the report is a function of the tracking store, so building twice gives the same report.
"""

from __future__ import annotations

import importlib.metadata
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure as MplFigure

from tlbench.report import figures, recommend, sections, tables
from tlbench.report.recommend import Recommendation, RecommendedArm, SizeComparison
from tlbench.report.render import Block, Figure, size_slug, summary_tex, to_html, to_markdown
from tlbench.report.sections import DrawnFigure, StudyAnalysis
from tlbench.tracking import names as N
from tlbench.tracking import study as store

FIGURES_DIR = "figures"
CSS_DPI = 105  # CSS px per figure inch: every figure at one scale; two panels fill the page width
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ReportResult:
    study: str
    directory: Path
    files: list[Path]
    published_to: str | None  # the parent run id the files were logged to
    problems: list[str] = field(default_factory=list)


def _safe(name: str) -> str:
    """A study name as a directory name (MLflow experiment names may hold '/' or spaces)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "study"


def _versions() -> dict[str, str]:
    out = {}
    for package in ("tlbench", "mlflow", "pandas", "matplotlib", "scipy"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "unknown"
    return out


def _file_list(directory: Path, files: list[Path]) -> list[str]:
    describe = {
        "report.md": "this report (Markdown; figures linked from `figures/`)",
        "report.html": "this report, self-contained (figures embedded)",
        "results.csv": "one row per trial: params, role, status, val/test accuracy, cost (as in MLflow)",
        "summary.tex": "the summary table for papers (booktabs)",
    }
    lines = [f"`{name}`: {text}" for name, text in describe.items()]
    drawn = [p for p in files if p.parent.name == FIGURES_DIR]
    if drawn:
        lines.append(f"`{FIGURES_DIR}/`: each figure as PNG and SVG ({len(drawn)} files)")
    return lines


def analyse(
    study: str | None = None,
    *,
    tolerance: float = 0.01,
    tracking_uri: str | None = None,
    progress: Progress = lambda message: None,
) -> StudyAnalysis:
    """Read ``study`` (the latest when None) and compute its summary, paired comparisons and verdicts:
    one function for the report and :func:`recommended_arm`, so export takes the arm the report names."""
    if not 0 <= tolerance < 1:
        raise ValueError(
            f"tolerance is an absolute accuracy in [0, 1), e.g. 0.01 = 1 point; got {tolerance=}"
        )
    ref = store.find_study(study, tracking_uri=tracking_uri)
    progress(f"study '{ref.name}' (experiment {ref.experiment_id}): reading runs")
    records = store.read_study(ref, tracking_uri=tracking_uri)
    # screens have their own section
    plain = tables.trials_table([r for r in records.children if not tables.is_screen_run(r)])
    trials = tables.label_arms(plain)  # strategy x resolution / backbone: each combination is an arm
    progress(f"{len(trials)} trial runs; computing summary and recommendation")
    final_ids = [str(r) for r in tables.final_results(trials)["run_id"]]
    progress(f"reading per-image test predictions of {len(final_ids)} final runs")
    predictions = store.read_test_predictions(final_ids, tracking_uri=tracking_uri)
    comparisons, summary, recommendations = verdicts(trials, predictions, tolerance=tolerance)
    unit = figures.device_hours_unit(trials[N.DEVICE])
    return StudyAnalysis(ref, records, plain, trials, comparisons, summary, recommendations, tolerance, unit)


def verdicts(
    trials: pd.DataFrame, predictions: Mapping[str, store.RunPredictions], *, tolerance: float
) -> tuple[list[SizeComparison], pd.DataFrame, list[Recommendation]]:
    """The paired comparisons, the summary table and the recommendations of labelled ``trials``."""
    comparisons = recommend.compare_strategies(trials, predictions)
    summary = recommend.with_comparisons(tables.summary_table(trials), comparisons, finals_only=False)
    return comparisons, summary, recommend.recommend(summary, tolerance=tolerance, comparisons=comparisons)


def recommended_arm(
    study: str | None = None,
    *,
    size: str | int | None = None,
    strategy: str | None = None,
    tolerance: float = 0.01,
    tracking_uri: str | None = None,
) -> RecommendedArm:
    """The arm the report recommends at data size ``size`` (default: the largest size with final runs),
    or the arm of ``strategy`` there, with the configuration its final runs ran (for ``tlbench export``).

    Raises:
        TlbenchError: the study has no completed final run, or ``size``/``strategy`` is not in it (the
            message lists the valid ones).
    """
    found = analyse(study, tolerance=tolerance, tracking_uri=tracking_uri)
    arm = recommend.choose_arm(
        found.ref.name,
        found.trials,
        found.summary,
        found.recommendations,
        size=None if size is None else str(size),
        strategy=strategy,
        tolerance=tolerance,
        unit=found.unit.unit,
    )
    config = store.read_text_artifact(arm.config_run_id, N.CONFIG_ARTIFACT, tracking_uri=tracking_uri)
    return replace(arm, config_yaml=config)


def build_report(
    study: str | None = None,
    *,
    out: Path = Path("reports"),
    tolerance: float = 0.01,
    tracking_uri: str | None = None,
    publish: bool = True,
    progress: Progress = lambda message: None,
) -> ReportResult:
    """Write the report of ``study`` (the latest when None) and, with ``publish``, log it to MLflow."""
    found = analyse(study, tolerance=tolerance, tracking_uri=tracking_uri, progress=progress)
    ref, records, trials, unit = found.ref, found.records, found.trials, found.unit
    comparisons, summary, recommendations = found.comparisons, found.summary, found.recommendations
    prospect = recommend.outlook(trials, summary, recommendations, tolerance=tolerance)
    directory = out / _safe(ref.name)
    figures_dir = directory / FIGURES_DIR
    if figures_dir.is_dir():
        shutil.rmtree(figures_dir)  # figures of an earlier build that this one may not produce
    directory.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    drawn: list[DrawnFigure] = []
    for info in figures.all_figures(trials):
        if not isinstance(info, figures.PlotInfo):
            progress(f"figure {info.name}: not in this study ({info.reason})")
            drawn.append((info, None, 0))
            continue
        progress(f"figure {info.name}")
        written, relative, width = _save(figures.draw(info), directory, info.name)
        files += written
        drawn.append((info, relative, width))
    screen_part, screen_files = _screen_section(records.children, found.plain, directory=directory)
    files += screen_files
    parent = records.parent
    inputs = replace(found, figures=drawn, report_software=_versions())
    totals = tables.study_totals(trials)
    blocks: list[Block] = [
        *sections.header(inputs),
        *sections.recommendation_section(inputs),
        *sections.paired_section(comparisons, tolerance=tolerance),
        *sections.curves_section(prospect, falls=recommend.falling_curves(summary, drop=tolerance)),
        *sections.summary_section(inputs),
        *sections.failed_section(inputs),
        *sections.figures_section(inputs),
        *screen_part,
        *sections.coverage_section(inputs),
        *sections.methods_section(inputs, totals),
        *sections.appendix(inputs, _file_list(directory, files)),
    ]
    progress(f"writing {directory}/")
    outputs = {
        "report.md": to_markdown(blocks),
        "report.html": to_html(
            blocks,
            images={p.relative_to(directory).as_posix(): p.read_bytes() for p in files if p.suffix == ".png"},
        ),
        "summary.tex": summary_tex(summary, study=ref.name, cost_label=unit.label.replace(" per run", "")),
        "results.csv": recommend.with_comparisons(trials, comparisons, finals_only=True).to_csv(index=False),
    }
    for name, text in outputs.items():
        (directory / name).write_text(text, encoding="utf-8")
        files.append(directory / name)
    published = None
    if publish and parent is not None:
        progress(
            f"logging the report to the parent run {parent.run_id} (artifacts under {N.REPORT_ARTIFACT_DIR}/)"
        )
        metrics, tags = parent_summary(found, totals)
        store.publish_report(
            parent.run_id, root=directory, files=files, metrics=metrics, tags=tags, tracking_uri=tracking_uri
        )
        published = parent.run_id
    return ReportResult(ref.name, directory, files, published, sections.problems(inputs))


def _screen_section(
    runs: Sequence[store.RunRecord], trials: pd.DataFrame, *, directory: Path
) -> tuple[list[Block], list[Path]]:
    """Blocks and written figure files of "Screen vs training"; ``([], [])`` for a study without screens."""
    screen = tables.screen_table(runs)
    if screen.empty:
        return [], []
    trained = tables.trained_accuracy(trials)
    info = figures.screen_figure_info(screen, trained)
    files: list[Path] = []
    block = None
    if info is not None:
        files, (png, svg), width = _save(figures.draw_screen(info), directory, figures.SCREEN_FIGURE)
        block = Figure(
            title="Screen vs training",
            png=png,
            svg=svg,
            caption="Each point is a (backbone, strategy) cell: the backbone's screen score against the "
            "cell's mean final test accuracy. Lines that rise left to right mean the screen ranked "
            "backbones as training did.",
            width=width,
        )
    return sections.screen_blocks(screen, trained, block), files


def _save(figure: MplFigure, directory: Path, stem: str) -> tuple[list[Path], tuple[str, str], int]:
    """``figure`` as PNG and SVG under ``figures/``: the files, their paths relative to the report, and
    its CSS width."""
    png, svg = figures.save(figure, directory / FIGURES_DIR, stem)
    relative = (png.relative_to(directory).as_posix(), svg.relative_to(directory).as_posix())
    return [png, svg], relative, round(float(figure.get_figwidth()) * CSS_DPI)


# --- the study summary on the parent run ------------------------------------------------------------
# Few metrics and tags, so MLflow's chart view shows the verdict, not ~80 one-bar charts (every number
# is in the files logged beside them). ``<size>``: ``n20`` … ``nall``. Metrics: the recommended arm's
# ``recommended/<size>/test_acc`` (mean over final seeds), ``…_low95``/``…_high95`` (its t interval,
# clipped to [0, 1]; two or more seeds), ``…/seeds``, ``…/device_seconds`` (× 3600, so a CPU study does
# not read 0.00); totals ``study/trials``, ``study/trials_failed`` (collapsed included),
# ``study/device_hours``. Tags: ``report.recommended|best|verdict|paired_basis/<size>``,
# ``report.tolerance``, ``report.cost_unit``.


def parent_summary(found: StudyAnalysis, totals: tables.Totals) -> tuple[dict[str, float], dict[str, str]]:
    """The parent run's metrics and tags."""
    trials, cost_unit = found.trials, found.unit.unit
    metrics: dict[str, float] = {}
    tags = {"report.tolerance": f"{found.tolerance:g}", "report.cost_unit": cost_unit}
    for rec in found.recommendations:
        slug, r = size_slug(rec.n_per_class), rec.recommended
        key = f"recommended/{slug}"
        metrics[f"{key}/test_acc"] = r.acc
        if r.acc_ci is not None:
            metrics[f"{key}/test_acc_low95"] = max(0.0, r.acc - r.acc_ci)
            metrics[f"{key}/test_acc_high95"] = min(1.0, r.acc + r.acc_ci)
        metrics[f"{key}/seeds"] = float(r.seeds)
        metrics[f"{key}/device_seconds"] = 3600 * r.cost
        tags[f"report.recommended/{slug}"] = r.strategy
        tags[f"report.best/{slug}"] = rec.best.strategy
        tags[f"report.verdict/{slug}"] = recommend.verdict_sentence(rec, r, unit=cost_unit)
        if rec.comparison is not None:
            tags[f"report.paired_basis/{slug}"] = rec.comparison.basis
    metrics["study/trials"] = float(len(trials))
    metrics["study/trials_failed"] = float((trials["outcome"] == "failed").sum())
    metrics["study/device_hours"] = totals.device_hours
    return {k: v for k, v in metrics.items() if not math.isnan(v)}, tags


def print_result(result: ReportResult) -> None:
    """Where the report went, and its problems (``tlbench report`` and the end of ``tlbench sweep``)."""
    print(f"report of study '{result.study}': {result.directory / 'report.html'}", flush=True)
    print(f"  also: report.md, results.csv, summary.tex, figures/ in {result.directory}/")
    if result.published_to:
        print(
            f"  logged to MLflow parent run {result.published_to} (artifacts under report/; browse: make ui)"
        )
    for problem in result.problems:
        print(f"  note: {problem}")
