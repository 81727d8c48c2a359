"""End to end: a study in MLflow -> reports/<study>/ -> the parent run; numbers checked against MLflow."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from scipy import stats

from tlbench.report.build import build_report
from tlbench.report.render import pct, pp
from tlbench.tracking.study import RunRecord

from .fake_study import FakeTrial, build_study
from .screen_fixture import final_runs, screen_runs

# --- the report of a study ----------------------------------------------------------------------------------

FIGURES = (
    "tradeoff_device_hours",
    "tradeoff_flops",
    "data_scaling",
    "freeze_depth",
    "lr_sensitivity",
    "tradeoff_trials",
)


def _mlflow_cells(store: dict[str, Any]) -> dict[tuple[str, str], list[Any]]:
    """Completed final runs per (strategy, n_per_class), straight from MlflowClient."""
    client = MlflowClient(store["uri"])
    cells: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for run_id in store["run_ids"].values():
        run = client.get_run(run_id)
        if run.data.tags["role"] == "final" and run.data.tags["status"] == "completed":
            cells[(run.data.params["strategy"], run.data.params["n_per_class"])].append(run.data)
    return cells


def test_every_file_is_written(built_report: Any) -> None:
    names = {p.relative_to(built_report.directory).as_posix() for p in built_report.files}
    # the four documents and each figure as PNG and SVG
    assert {"report.md", "report.html", "results.csv", "summary.tex"} <= names
    assert {f"figures/{f}.{ext}" for f in FIGURES for ext in ("png", "svg")} <= names
    for path in built_report.files:
        assert path.stat().st_size > 200, path  # nothing empty


def test_results_csv_equals_mlflow(built_report: Any, study_store: dict[str, Any]) -> None:
    csv = pd.read_csv(built_report.directory / "results.csv", dtype=str, keep_default_na=False)
    client = MlflowClient(study_store["uri"])
    # one row per trial run, no more, no less
    assert set(csv["run_id"]) == set(study_store["run_ids"].values())
    for row in csv.to_dict("records"):
        run = client.get_run(row["run_id"])
        for name, value in run.data.metrics.items():
            assert float(row[name]) == value, (row["run_id"], name)  # exact: nothing rounded
        for name in set(run.data.metrics) ^ {c for c in csv.columns if "/" in c}:
            assert row.get(name, "") == "", name  # a metric the run did not log stays empty
        for name, value in run.data.params.items():
            cell = row[name]
            assert cell == value or (cell != "" and float(cell) == float(value)), (name, cell, value)
        assert (row["role"], row["status"]) == (run.data.tags["role"], run.data.tags["status"])


def test_summary_numbers_equal_mlflow(built_report: Any, study_store: dict[str, Any]) -> None:
    markdown = (built_report.directory / "report.md").read_text()
    for runs in _mlflow_cells(study_store).values():
        accs = [r.metrics["test/acc"] for r in runs]
        mean = math.fsum(accs) / len(accs)
        if len(accs) > 1:
            half = stats.t.ppf(0.975, len(accs) - 1) * stats.tstd(accs) / math.sqrt(len(accs))
            shown = f"{pct(mean)} ± {pp(half)}"
        else:
            shown = f"{pct(mean)} (single seed)"
        # the table shows each cell's mean and t interval over its completed final seeds, rounded for reading
        assert shown in markdown, shown


def test_parent_summary_metrics_are_few_and_are_the_recommendation(
    built_report: Any, study_store: dict[str, Any]
) -> None:
    data = MlflowClient(study_store["uri"]).get_run(study_store["parent_run_id"]).data
    cells = _mlflow_cells(study_store)
    for slug, size, arm in (("n10", "10", "linear_probe"), ("nall", "all", "full_finetune")):
        runs = cells[(arm, size)]
        accs = [r.metrics["test/acc"] for r in runs]
        mean = math.fsum(accs) / len(accs)
        half = stats.t.ppf(0.975, len(accs) - 1) * stats.tstd(accs) / math.sqrt(len(accs))
        # per size: the recommended arm's mean test accuracy and its 95% interval (clipped), seeds, cost
        assert data.metrics[f"recommended/{slug}/test_acc"] == pytest.approx(mean, abs=1e-12)
        assert data.metrics[f"recommended/{slug}/test_acc_low95"] == pytest.approx(mean - half, rel=1e-9)
        assert data.metrics[f"recommended/{slug}/test_acc_high95"] == pytest.approx(
            min(1, mean + half), rel=1e-9
        )
        assert data.metrics[f"recommended/{slug}/seeds"] == len(runs)
        hours = math.fsum(r.metrics["cost/device_hours"] for r in runs) / len(runs)
        assert data.metrics[f"recommended/{slug}/device_seconds"] == pytest.approx(3600 * hours)
        assert data.tags[f"report.recommended/{slug}"] == arm
        assert data.tags[f"report.verdict/{slug}"].startswith(
            f"At {'all data' if size == 'all' else 'n=10/class'}"
        )
    # few: 5 per size and 3 totals, never one per arm
    assert len(data.metrics) == 2 * 5 + 3 and not any(k.startswith("best/") for k in data.metrics)


def test_parent_run_carries_the_report(built_report: Any, study_store: dict[str, Any]) -> None:
    client = MlflowClient(study_store["uri"])
    parent = study_store["parent_run_id"]
    assert built_report.published_to == parent
    names = {a.path for a in client.list_artifacts(parent, "report")}
    assert {
        "report/report.md",
        "report/report.html",
        "report/results.csv",
        "report/summary.tex",
        "report/figures",
    } <= names
    figures = {a.path for a in client.list_artifacts(parent, "report/figures")}
    assert "report/figures/tradeoff_device_hours.svg" in figures
    run = client.get_run(parent)
    # the recommendation as tags, the totals as metrics
    assert run.data.tags["report.recommended/n10"] == "linear_probe"
    assert run.data.tags["report.recommended/nall"] == "full_finetune"
    assert run.data.metrics["study/trials_failed"] == 2 and run.data.metrics["study/trials"] == 36


def test_report_says_what_is_missing(built_report: Any) -> None:
    text = (built_report.directory / "report.md").read_text()
    for expected in (
        "This study is incomplete",
        "out of memory",  # a failed trial's reason
        "diverged (loss is NaN)",
        "scratch at n=10/class: a single completed final seed",
        "partial at all data: no completed final run",
        "1 trial(s) pruned early",
    ):
        assert expected in text, expected
    # the recommendation uses the numbers of the table
    assert "use **linear_probe**: 82.0% test accuracy (± 5.0 pp, 3 seeds)" in text


def _study(uri: str, tmp: Path, trials: list[FakeTrial], **kw: Any) -> Any:
    build_study(uri, "s", trials, **kw)
    return build_report("s", out=tmp / "reports", tracking_uri=uri)


ONE = FakeTrial("final", "linear_probe", "10", test_acc=0.7)


@pytest.mark.parametrize(
    ("trials", "kw", "expected"),
    [
        # every trial failed or pruned: a report that says so, every figure replaced by a note
        ([FakeTrial("tune", "scratch", "10", status="pruned", test_acc=None),
          FakeTrial("final", "scratch", "10", status="failed: out of memory", val_acc=None, test_acc=None)],
         {}, ["nothing to recommend", "No completed final run with", "Not in this study: no completed"]),
        # a single seed of a single strategy: no CI, nothing to compare
        ([ONE], {}, ["70.0% (single seed)", "Nothing to compare", "Not in this study: only one data size",
                     "a single final seed everywhere", "List more seeds under `final_seeds`"]),
        # no parent run: files still written, the report says it could not be attached
        ([ONE], {"with_parent": False}, ["no parent run"]),
        # an empty study
        ([], {}, ["The study has no trial runs yet"]),
    ],
)  # fmt: skip
def test_partial_studies_give_a_report(
    mlflow_uri: str, tmp_path: Path, trials: list[FakeTrial], kw: dict[str, Any], expected: list[str]
) -> None:
    result = _study(mlflow_uri, tmp_path, trials, **kw)
    text = (result.directory / "report.md").read_text()
    for phrase in expected:
        assert phrase in text, phrase
    assert (result.directory / "report.html").stat().st_size > 1000
    assert (result.published_to is None) == (kw.get("with_parent") is False)


def test_rebuild_drops_stale_figures(mlflow_uri: str, tmp_path: Path) -> None:
    stale = tmp_path / "reports" / "s" / "figures" / "old.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x")
    _study(mlflow_uri, tmp_path, [ONE])
    # a figure this build did not draw must not linger next to the report
    assert not stale.exists()


def test_report_gives_paired_comparisons(built_report: Any, study_store: dict[str, Any]) -> None:
    text = (built_report.directory / "report.md").read_text()
    # per size: the paired table, P(best), and a recommendation that follows them (per-image basis)
    expected_parts = (
        "## Paired comparisons",
        # the joint comparison keeps all three seeds of the two best-seeded arms (partial lost seed 2)
        "| n=10/class | full_finetune | 82.5% | best |",
        "| n=10/class | partial | 82.0% | −0.2 pp",  # partial: paired with the best on its 2 seeds
        "Compared with the best on fewer seeds (no P(best)): partial (2 seeds)",
        "P(best): full_finetune",
        "**linear_probe** and **full_finetune** are indistinguishable on this data",
        "Credibly worse than full_finetune: linear_probe",
        "## Learning curves",
        "would the recommendation change?",
        # every curve of this study has two sizes: said, not hidden
        "**linear_probe**, **full_finetune**, **scratch**: fitted from two sizes only (10 and 50 per class)",
    )
    for expected in expected_parts:
        assert expected in text, expected
    assert "approximated as binomial" not in text  # every final run logged its predictions
    csv = pd.read_csv(built_report.directory / "results.csv")
    finals = csv[(csv["role"] == "final") & (csv["status"] == "completed") & (csv["strategy"] != "scratch")]
    tags = MlflowClient(study_store["uri"]).get_run(study_store["parent_run_id"]).data.tags
    # every completed final run of a compared arm carries its arm's paired difference; tuning trials none
    assert finals["paired_diff"].notna().all() and csv[csv["role"] == "tune"]["paired_diff"].isna().all()
    at_all = finals[finals["n_per_class"] == "all"].drop_duplicates("strategy")["p_best"]
    assert at_all.sum() == pytest.approx(1.0) and tags["report.paired_basis/n10"] == "per_image"
    tex = (built_report.directory / "summary.tex").read_text()
    assert r"$\Delta$ vs best [95\% CI]" in tex and "& $-5.7$ [$" in tex


def test_old_studies_fall_back_to_binomial(mlflow_uri: str, tmp_path: Path) -> None:
    trials = [FakeTrial("final", s, "10", trial_number=3 * i + seed, seed=seed, test_acc=acc + 0.01 * seed,
                        predictions=False)
              for i, (s, acc) in enumerate((("linear_probe", 0.8), ("full_finetune", 0.82)))
              for seed in range(3)]  # fmt: skip
    text = (_study(mlflow_uri, tmp_path, trials).directory / "report.md").read_text()
    # no per-image predictions: the report still compares, and says how it approximated
    assert "approximated as binomial" in text and "(binomial)" in text


def test_pruned_tuning_trials_do_not_make_a_study_incomplete(mlflow_uri: str, tmp_path: Path) -> None:
    trials = [FakeTrial("tune", "linear_probe", "10", status="pruned", test_acc=None)]
    trials += [FakeTrial("final", s, "10", trial_number=1 + 2 * i + seed, seed=seed, test_acc=0.8)
               for i, s in enumerate(("linear_probe", "scratch")) for seed in range(2)]  # fmt: skip
    result = _study(mlflow_uri, tmp_path, trials)
    text = (result.directory / "report.md").read_text()
    # pruning is the protocol working: no warning, but still listed under Data coverage
    assert "This study is incomplete" not in text and result.problems == []
    assert "1 trial(s) pruned early" in text


def _smoke_as_in_issue_19() -> list[FakeTrial]:
    """The smoke study of issue 19: lp_ft "completes" at chance (10 classes) on every seed, untagged (an
    older study), and scratch falls as data grows (62% -> 42%)."""
    rows = [("full_finetune", "5", 0.60), ("full_finetune", "10", 0.69), ("lp_ft", "5", 0.10),
            ("lp_ft", "10", 0.10), ("scratch", "5", 0.62), ("scratch", "10", 0.42)]  # fmt: skip
    return [
        FakeTrial("final", s, n, trial_number=10 * i + seed, seed=seed, test_acc=acc + 0.002 * seed,
                  val_acc=acc + 0.002 * seed)
        for i, (s, n, acc) in enumerate(rows)
        for seed in range(3)
    ]  # fmt: skip


def test_an_arm_at_chance_is_a_failure_never_a_finding(mlflow_uri: str, tmp_path: Path) -> None:
    result = _study(mlflow_uri, tmp_path, _smoke_as_in_issue_19())
    text = (result.directory / "report.md").read_text()
    # listed as failed, with the reason; the study is flagged
    assert "## Failed configurations" in text and "within noise of chance" in text
    assert "**lp_ft** at n=10/class: 3 final seed(s) collapsed" in text
    assert "failed (collapsed) arm(s): lp_ft at n=5/class, lp_ft at n=10/class" in text
    # never compared, never "credibly worse", never in the summary
    assert "Failed, not compared: **lp_ft** at n=5/class" in text
    summary = text.split("## Summary")[1].split("\n## ")[0]
    assert "Credibly worse than full_finetune: lp_ft" not in text and "lp_ft" not in summary
    # scratch falls as data grows: said in the learning curves and under the data-scaling figure
    assert "**scratch** falls as data grows: 62.2% at n=5/class → 42.2% at n=10/class" in text
    assert "Falls as data grows: scratch (62.2% → 42.2%)" in text


def test_methods_show_tuning_budget_checks_cost_rule_and_the_race(mlflow_uri: str, tmp_path: Path) -> None:
    rule = (("device_hours_rule", "cpu: fit process CPU seconds / 2 threads"),)
    trials = [
        FakeTrial("tune", s, "5", trial_number=i, val_acc=0.7, extra_tags=rule)
        for i, s in enumerate(("linear_probe", "scratch"))
    ]
    trials += [
        FakeTrial("final", "linear_probe", "5", trial_number=10 + seed, seed=seed, test_acc=0.8 + 0.01 * seed,
                  extra_tags=(*rule, ("race_round", str(1 + seed // 2))))
        for seed in range(4)
    ]  # fmt: skip
    trials += [
        FakeTrial("final", "scratch", "5", trial_number=20 + seed, seed=seed, test_acc=0.4, extra_tags=rule)
        for seed in range(2)
    ]
    trials.append(
        FakeTrial("budget_check", "linear_probe", "5", trial_number=30, val_acc=0.74,
                  extra_metrics=(("budget_check/base_val_acc", 0.7),),
                  extra_tags=(*rule, ("budget_factor", "2"), ("base_run_id", "x")))
    )  # fmt: skip
    sweep = "search:\n  optimizer.lr: {low: 0.001, high: 0.03, log: true}\nbudget: {trials_per_cell: 1}\n"
    race = {"rule": "retire the credibly worse", "cap": 4, "rounds": 2, "arms": [
        {"cell": "a", "strategy": "linear_probe", "n_per_class": "5", "factors": {}, "seeds": [0, 1, 2, 3],
         "retired_round": None, "reason": "seed cap reached"},
        {"cell": "b", "strategy": "scratch", "n_per_class": "5", "factors": {}, "seeds": [0, 1],
         "retired_round": 1, "reason": "credibly worse on validation than linear_probe"}]}  # fmt: skip
    result = _study(mlflow_uri, tmp_path, trials, sweep_yaml=sweep, race=race)
    text = (result.directory / "report.md").read_text()
    for expected in (
        "Every arm with something to tune had the same tuning budget: 1 trials",
        "| n=5/class | linear_probe | 1 (1 completed) | `optimizer.lr` 0.001–0.03 (log) |",
        "Doubling the step budget changed validation accuracy by more than 1.0 pp for 1 of 1 arm(s): "
        "linear_probe at n=5/class (+4.0 pp)",
        "As logged: `cpu: fit process CPU seconds / 2 threads`",
        "### Final seeds: the race",
        "| n=5/class | scratch | 2 (0, 1) | 1 | credibly worse on validation than linear_probe |",
        "at most 4 seeds per arm, 2 round(s)",
    ):
        assert expected in text, expected
    # the raced arms keep their own seeds: 4 for the probe, 2 for scratch
    assert "| n=5/class | linear_probe | **81.5% ± 2.1 pp** ★ | 4 |" in text
    assert "| n=5/class | scratch | 40.0% ± 0.0 pp | 2 |" in text


def test_an_interrupted_run_is_not_a_failure(mlflow_uri: str, tmp_path: Path) -> None:
    trials = [
        FakeTrial("final", "linear_probe", "10", trial_number=s, seed=s, test_acc=0.8) for s in range(2)
    ]
    trials.append(FakeTrial("final", "linear_probe", "10", trial_number=2, seed=2,
                            status="failed: interrupted", test_acc=None, val_acc=None))  # fmt: skip
    trials.append(FakeTrial("tune", "linear_probe", "10", trial_number=3, status="pruned", test_acc=None))
    result = _study(mlflow_uri, tmp_path, trials)
    text = (result.directory / "report.md").read_text()
    # Ctrl-C: the study is incomplete and resumable, no configuration failed; pruned (FINISHED) is pruned
    assert result.problems == ["1 final run(s) interrupted"]
    assert "1 trial(s) interrupted (stopped, not failed)" in text and "1 trial(s) pruned early" in text


# --- a study with screen runs -------------------------------------------------------------------------------


def _log(client: MlflowClient, experiment_id: str, run: RunRecord, parent: str) -> None:
    created = client.create_run(experiment_id, run_name=run.run_name, tags={"mlflow.parentRunId": parent})
    rid = created.info.run_id
    client.log_batch(
        rid,
        metrics=[Metric(k, v, 0, 0) for k, v in run.metrics.items()],
        params=[Param(k, v) for k, v in run.params.items()],
        tags=[RunTag(k, v) for k, v in run.tags.items()],
    )
    client.set_terminated(rid, "FINISHED")


def _screen_study(uri: str) -> None:
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("backbones", tags={"tlbench.study": "backbones"})
    parent = client.create_run(experiment_id, run_name="study:backbones", tags={"role": "study"}).info.run_id
    for run in [*final_runs(), *screen_runs()]:
        _log(client, experiment_id, run, parent)
    client.set_terminated(parent, "FINISHED")


def test_report_of_a_study_with_screen_runs(mlflow_uri: str, tmp_path: Path) -> None:
    # the report gets a 'Screen vs training' section with the tau table and figure; screen runs are
    # not trials (absent from results.csv)
    _screen_study(mlflow_uri)
    result = build_report("backbones", out=tmp_path / "reports", tracking_uri=mlflow_uri, publish=False)
    markdown = (result.directory / "report.md").read_text()
    assert "## Screen vs training" in markdown
    assert "best strategy per backbone" in markdown and "Kendall" in markdown
    assert (result.directory / "figures" / "screen_vs_training.png").is_file()
    assert (result.directory / "figures" / "screen_vs_training.svg").is_file()
    results = pd.read_csv(result.directory / "results.csv")
    assert len(results) == len(final_runs()) and "screen" not in set(results["role"].astype(str))


def test_report_without_screen_runs_has_no_screen_section(mlflow_uri: str, tmp_path: Path) -> None:
    # studies that never screened read exactly as before
    client = MlflowClient(mlflow_uri)
    experiment_id = client.create_experiment("plain", tags={"tlbench.study": "plain"})
    parent = client.create_run(experiment_id, run_name="study:plain", tags={"role": "study"}).info.run_id
    for run in final_runs():
        _log(client, experiment_id, run, parent)
    result = build_report("plain", out=tmp_path / "reports", tracking_uri=mlflow_uri, publish=False)
    assert "Screen vs training" not in (result.directory / "report.md").read_text()
