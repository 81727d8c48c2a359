"""The GPU check's CPU-testable parts: its no-GPU exit, the docs section it writes, its flow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import gpu
from benchmarks.gpu import END_MARK, START_MARK, NoGpu, Step, render, replace_section, scaling_sweep

MACHINE = {
    "date": "2027-01-01 00:00 UTC",
    "gpu": "NVIDIA H100",
    "torch": "2.14.1",
    "cuda": "12.8",
    "wall_s": 540.0,
}


def test_without_a_gpu_it_stops_at_once_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # CI has no GPU: exit 2, one line on stderr, no docs or JSON written, nothing measured
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the no-GPU path cannot be taken")
    docs, out = tmp_path / "benchmarks.md", tmp_path / "gpu.json"
    assert gpu.main(["--docs", str(docs), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no CUDA GPU here" in err
    assert not docs.exists() and not out.exists()


def _no_gpu() -> str:
    raise NoGpu("no CUDA GPU here (test)")


def test_the_gpu_test_comes_before_anything_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # no step is started when the check fails, whatever machine runs the test
    def boom(*args: object) -> Step:
        raise AssertionError("a step ran without a GPU")

    for step in ("bench_step", "scaling_step", "photo_step"):
        monkeypatch.setattr(gpu, step, boom)
    assert gpu.main(["--docs", str(tmp_path / "d.md")], gpu_check=_no_gpu) == 2


DOC = "# Benchmarks\n\nintro\n\n## GPU path\n\nhow to run it\n"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        # no section yet: appended at the end, marks included
        (DOC, DOC + f"\n{START_MARK}\nNEW\n{END_MARK}\n"),
        # a section already there: only its inside changes, text around it byte for byte
        (f"a\n{START_MARK}\nOLD\nfigures\n{END_MARK}\nb\n", f"a\n{START_MARK}\nNEW\n{END_MARK}\nb\n"),
        (f"{START_MARK}\n{END_MARK}", f"{START_MARK}\nNEW\n{END_MARK}"),  # an empty section
    ],
)
def test_replace_section_rewrites_only_between_the_marks(document: str, expected: str) -> None:
    assert replace_section(document, "NEW\n") == expected
    assert replace_section(expected, "NEW") == expected  # idempotent: a second run changes nothing


@pytest.mark.parametrize("document", [f"a {START_MARK} b", f"a {END_MARK} b", f"{END_MARK}\n{START_MARK}"])
def test_damaged_marks_are_an_error_not_a_guess(document: str) -> None:
    # one mark missing or out of order: refuse rather than overwrite the wrong text
    with pytest.raises(ValueError, match="marks are damaged"):
        replace_section(document, "NEW")


def test_render_names_the_machine_each_step_and_its_figures() -> None:
    steps = [
        Step("make bench", "done", 200.0, {"trial_loaded_over_alone": 2.05}, "ratio  value\nx      1.0"),
        Step("photo study", "skipped: no photos at /x"),
    ]
    text = render(steps, MACHINE)
    assert text.startswith("### GPU check of 2027-01-01 00:00 UTC (NVIDIA H100)")
    assert "whole check 540 s (9.0 min)" in text
    assert "**make bench**: done, 200 s (3.3 min)." in text and "* trial_loaded_over_alone: 2.05" in text
    assert "```\nratio  value\nx      1.0\n```" in text  # what the bench printed, verbatim
    assert "**photo study**: skipped: no photos at /x." in text


def test_the_scaling_study_is_a_valid_sweep_of_eight_identical_trials() -> None:
    # the sweep file the check writes parses as a sweep: one cell, no tuning, 8 final seeds
    from tlbench.sweep.spec import parse_sweep

    spec = parse_sweep(scaling_sweep(), name="scaling")
    assert spec.final_seeds == (1, 2, 3, 4, 5, 6, 7, 8)
    assert "data.resolution=224" in spec.base


def test_a_run_writes_the_docs_section_and_json_and_a_failed_step_does_not_stop_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs, out = tmp_path / "benchmarks.md", tmp_path / "reports" / "gpu.json"
    docs.write_text(DOC)

    def broken_bench(*args: object) -> Step:
        raise RuntimeError("the bench broke")

    monkeypatch.setattr(gpu, "bench_step", broken_bench)
    monkeypatch.setattr(gpu, "scaling_step", lambda deadline: Step("scaling", "done", 60.0, {"ratio": 3.1}))
    photos = tmp_path / "no-photos"
    code = gpu.main(
        ["--docs", str(docs), "--out", str(out), "--photos", str(photos), "--budget-min", "1"],
        gpu_check=lambda: "Fake GPU",
    )
    assert code == 0
    text = docs.read_text()
    assert text.startswith(DOC)  # the rest of the document is kept
    assert "(Fake GPU)" in text and "**make bench**: failed: RuntimeError: the bench broke." in text
    assert "* ratio: 3.1" in text and f"skipped: no photos at {photos}" in text
    data = json.loads(out.read_text())
    assert [s["status"] for s in data["steps"]][1:] == [
        "done",
        f"skipped: no photos at {photos} (pass --photos FOLDER or set TLBENCH_DATASETS)",
    ]


def test_the_docs_file_has_the_section_the_check_replaces() -> None:
    # docs/benchmarks.md carries both marks in order: a run replaces its section, never appends another
    text = (Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md").read_text()
    assert text.count(START_MARK) == 1 and text.count(END_MARK) == 1
    assert replace_section(text, "figures").count(START_MARK) == 1
