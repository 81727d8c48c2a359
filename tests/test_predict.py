"""``tlbench predict``: a CSV of path, class, probability; bad input is one line naming it."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from tlbench.cli import main
from tlbench.predict import collect
from tracking.champion_helpers import BLUE, RED, photo, register_colour_model

MODEL = "models:/colours@champion"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One MLflow store with the colour model registered as models:/colours@champion."""
    folder = tmp_path_factory.mktemp("predict-store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        register_colour_model(folder, tracking_uri=uri)
    yield uri


@pytest.fixture
def photos(tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    (folder / "red.png").write_bytes(photo(RED))
    (folder / "more" / "blue.jpg").write_bytes(photo(BLUE, fmt="JPEG"))
    return folder


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_files_and_folders_are_classified_into_a_csv(
    photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = photos.parent / "extra.webp"
    extra.write_bytes(photo(RED, fmt="WEBP"))
    assert main(["predict", "--model", MODEL, str(photos), str(extra)]) == 0
    rows = _rows(capsys.readouterr().out)
    # every image, a folder's recursively in sorted order, with the class the colour says
    assert [(Path(r["path"]).name, r["class"]) for r in rows] == [
        ("blue.jpg", "bees"),
        ("red.png", "ants"),
        ("extra.webp", "ants"),
    ]
    assert all(0.5 < float(r["probability"]) <= 1.0 for r in rows)


def test_a_file_that_is_not_an_image_is_one_line_and_the_others_are_still_classified(
    photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = photos.parent / "notes.txt"
    notes.write_text("not a photo")
    (photos / "broken.png").write_bytes(b"\x89PNG but cut short")
    status = main(["predict", "--model", MODEL, str(notes), str(photos)])
    captured = capsys.readouterr()
    # exit status 1: some failed; the good ones are in the CSV
    assert status == 1
    assert sorted(Path(r["path"]).name for r in _rows(captured.out)) == ["blue.jpg", "red.png"]
    errors = captured.err.strip().splitlines()
    assert (
        len([e for e in errors if "notes.txt" in e]) == 1
        and len([e for e in errors if "broken.png" in e]) == 1
    )
    assert all("Traceback" not in e for e in errors)


def test_a_model_that_does_not_exist_is_one_line_naming_it(
    photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["predict", "--model", "models:/no-such-study@champion", str(photos)])
    err = capsys.readouterr().err.strip()
    # usage error status, one line with the URI and how a champion comes to exist
    assert status == 2
    assert len(err.splitlines()) == 1 and "models:/no-such-study@champion" in err and "tlbench export" in err


def test_a_missing_path_is_named_and_the_rest_classified(
    photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["predict", "--model", MODEL, str(photos / "red.png"), "nowhere.png"])
    captured = capsys.readouterr()
    assert status == 1
    assert [Path(r["path"]).name for r in _rows(captured.out)] == ["red.png"]
    assert "nowhere.png: no such file or folder" in captured.err


def test_out_writes_the_csv_to_a_file(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "predictions.csv"
    assert main(["predict", "--model", MODEL, "--out", str(target), str(photos / "red.png")]) == 0
    # stdout stays empty; the file has the header and the row
    assert capsys.readouterr().out == ""
    assert [r["class"] for r in _rows(target.read_text())] == ["ants"]


def test_collect_skips_hidden_and_non_image_files_in_folders(tmp_path: Path) -> None:
    (tmp_path / ".cache").mkdir()
    for name in ("a.JPG", "b.png", "readme.md", ".hidden.png", ".cache/c.png"):
        (tmp_path / name).write_bytes(b"")
    inputs = collect([tmp_path])
    # image extensions of any case are kept; hidden entries never; other files are listed as skipped
    assert [p.name for p in inputs.files] == ["a.JPG", "b.png"]
    assert [p.name for p in inputs.skipped] == ["readme.md"]


def test_help_lists_what_predict_takes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert all(word in out for word in ("--model", "--out", "PATH", "models:/<study>@champion"))


def test_help_lists_what_export_takes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert all(word in out for word in ("--study", "--size", "--strategy", "train + validation"))


def test_commands_are_listed_in_tlbench_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # one line each in the command table
    assert any(line.split()[:1] == ["export"] for line in lines)
    assert any(line.split()[:1] == ["predict"] for line in lines)
