"""Build a study's report: read MLflow, compute, draw, write ``<out>/<study>/``, attach it to the study.

Everything in the report is a function of the tracking store, so building twice gives the same report.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from tlbench.report.arms import label_arms
from tlbench.report.collect import trials_table
from tlbench.report.coverage import coverage_section, problems
from tlbench.report.document import Block
from tlbench.report.draw import draw, save
from tlbench.report.figures_data import PlotInfo, all_figures, device_hours_unit
from tlbench.report.inputs import DrawnFigure, ReportInputs
from tlbench.report.methods import methods_section
from tlbench.report.outlook import outlook
from tlbench.report.paired import SizeComparison, compare_strategies, with_comparisons
from tlbench.report.paired_section import curves_section, paired_section
from tlbench.report.rank_agreement import is_screen_run
from tlbench.report.recommend import Recommendation, RecommendedArm, choose_arm, recommend
from tlbench.report.render_html import to_html
from tlbench.report.render_latex import summary_tex
from tlbench.report.render_markdown import to_markdown
from tlbench.report.screen_section import screen_section
from tlbench.report.sections import (
    appendix,
    figures_section,
    header,
    recommendation_section,
    summary_section,
)
from tlbench.report.study_metrics import parent_metrics, parent_tags
from tlbench.report.summarize import final_results, study_totals, summary_table
from tlbench.tracking.names import CONFIG_ARTIFACT
from tlbench.tracking.study_publish import REPORT_ARTIFACT_DIR, publish_report
from tlbench.tracking.study_reader import (
    SWEEP_TAG,
    StudyRecords,
    StudyRef,
    find_study,
    read_study,
    read_test_predictions,
    read_text_artifact,
)

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
    figures = sorted(p.relative_to(directory).as_posix() for p in files if p.parent.name == FIGURES_DIR)
    if figures:
        lines.append(f"`{FIGURES_DIR}/`: each figure as PNG and SVG ({len(figures)} files)")
    return lines


@dataclass(frozen=True)
class StudyAnalysis:
    """A study's runs and everything the report and the recommended arm compute from them."""

    ref: StudyRef
    records: StudyRecords
    plain: pd.DataFrame  # the trials table of every run but the screens (they have their own section)
    trials: pd.DataFrame  # the same, strategies relabelled per arm (report.arms)
    comparisons: list[SizeComparison]
    summary: pd.DataFrame
    recommendations: list[Recommendation]
    tolerance: float


def analyse(
    study: str | None = None,
    *,
    tolerance: float = 0.01,
    tracking_uri: str | None = None,
    progress: Progress = lambda message: None,
) -> StudyAnalysis:
    """Read ``study`` (the latest when None) and compute its summary, paired comparisons and verdicts.

    One function for the report and for :func:`recommended_arm`, so the arm a model is exported from is
    the arm the report recommends.
    """
    if not 0 <= tolerance < 1:
        raise ValueError(
            f"tolerance is an absolute accuracy in [0, 1), e.g. 0.01 = 1 point; got {tolerance=}"
        )
    ref = find_study(study, tracking_uri=tracking_uri)
    progress(f"study '{ref.name}' (experiment {ref.experiment_id}): reading runs")
    records = read_study(ref, tracking_uri=tracking_uri)
    plain = trials_table([r for r in records.children if not is_screen_run(r)])  # screens: own section
    trials = label_arms(plain)  # strategy x resolution / backbone: each combination is an arm
    progress(f"{len(trials)} trial runs; computing summary and recommendation")
    final_ids = [str(r) for r in final_results(trials)["run_id"]]
    progress(f"reading per-image test predictions of {len(final_ids)} final runs")
    predictions = read_test_predictions(final_ids, tracking_uri=tracking_uri)
    comparisons = compare_strategies(trials, predictions)
    summary = with_comparisons(summary_table(trials), comparisons, finals_only=False)
    recommendations = recommend(summary, tolerance=tolerance, comparisons=comparisons)
    return StudyAnalysis(ref, records, plain, trials, comparisons, summary, recommendations, tolerance)


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
    arm = choose_arm(
        found.ref.name,
        found.trials,
        found.summary,
        found.recommendations,
        size=None if size is None else str(size),
        strategy=strategy,
        tolerance=tolerance,
        unit=device_hours_unit(found.trials["device"]).unit,
    )
    config = read_text_artifact(arm.config_run_id, CONFIG_ARTIFACT, tracking_uri=tracking_uri)
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
    ref, records, plain, trials = found.ref, found.records, found.plain, found.trials
    comparisons, summary, recommendations = found.comparisons, found.summary, found.recommendations
    prospect = outlook(trials, summary, recommendations, tolerance=tolerance)
    unit = device_hours_unit(trials["device"])
    directory = out / _safe(ref.name)
    figures_dir = directory / FIGURES_DIR
    if figures_dir.is_dir():
        shutil.rmtree(figures_dir)  # figures of an earlier build that this one may not produce
    directory.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    drawn: list[DrawnFigure] = []
    for info in all_figures(trials):
        if not isinstance(info, PlotInfo):
            progress(f"figure {info.name}: not in this study ({info.reason})")
            drawn.append((info, None, 0))
            continue
        progress(f"figure {info.name}")
        figure = draw(info)
        png, svg = save(figure, figures_dir, info.name)
        files += [png, svg]
        relative = (png.relative_to(directory).as_posix(), svg.relative_to(directory).as_posix())
        drawn.append((info, relative, round(float(figure.get_figwidth()) * CSS_DPI)))
    screen_blocks, screen_files = screen_section(
        records.children, plain, directory=directory, figures_dir=FIGURES_DIR
    )
    files += screen_files
    parent = records.parent
    inputs = ReportInputs(
        study=ref.name,
        sweep=ref.tags.get(SWEEP_TAG) or (parent.tags.get(SWEEP_TAG) if parent else None),
        experiment_id=ref.experiment_id,
        parent_run_id=parent.run_id if parent else None,
        tracking_uri=records.tracking_uri,
        trials=trials,
        summary=summary,
        recommendations=recommendations,
        tolerance=tolerance,
        unit=unit,
        figures=drawn,
        parent_params=dict(parent.params) if parent else {},
        extra_parents=records.extra_parents,
        sweep_yaml=records.sweep_yaml,
        report_software=_versions(),
        comparisons=comparisons,
        outlook=prospect,
    )
    totals = study_totals(trials)
    blocks: list[Block] = [
        *header(inputs),
        *recommendation_section(inputs),
        *paired_section(comparisons, tolerance=tolerance),
        *curves_section(prospect),
        *summary_section(inputs),
        *figures_section(inputs),
        *screen_blocks,
        *coverage_section(inputs),
        *methods_section(inputs, totals),
        *appendix(inputs, _file_list(directory, files)),
    ]
    progress(f"writing {directory}/")
    outputs = {
        "report.md": to_markdown(blocks),
        "report.html": to_html(
            blocks,
            images={p.relative_to(directory).as_posix(): p.read_bytes() for p in files if p.suffix == ".png"},
        ),
        "summary.tex": summary_tex(summary, study=ref.name, cost_label=unit.label.replace(" per run", "")),
    }
    for name, text in outputs.items():
        (directory / name).write_text(text, encoding="utf-8")
        files.append(directory / name)
    with_comparisons(trials, comparisons, finals_only=True).to_csv(directory / "results.csv", index=False)
    files.append(directory / "results.csv")
    published = None
    if publish and parent is not None:
        progress(
            f"logging the report to the parent run {parent.run_id} (artifacts under {REPORT_ARTIFACT_DIR}/)"
        )
        publish_report(
            parent.run_id,
            root=directory,
            files=files,
            metrics=parent_metrics(summary, trials, totals),
            tags=parent_tags(recommendations, tolerance=tolerance, cost_unit=unit.unit),
            tracking_uri=tracking_uri,
        )
        published = parent.run_id
    return ReportResult(ref.name, directory, files, published, problems(inputs))
