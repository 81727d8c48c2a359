"""tlbench sweep's command line: plain --help listing the shipped sweeps; input errors before torch loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from tlbench.commands.sweep import main as sweep_main
from tlbench.errors import ConfigError, TlbenchError
from tlbench.sweep.spec import parse_sweep, shipped_sweeps

from .conftest import TINY_BASE, SweepWriter

# Runs the command in a fresh interpreter and reports its status and whether torch had been imported.
PROBE = """
import json, sys
from tlbench.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


def test_help_lists_the_shipped_sweeps_in_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    # every sweep in sweeps/ with its one-line description; no reStructuredText markup
    with pytest.raises(SystemExit) as done:
        sweep_main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    names = [name for name, _ in shipped_sweeps()]
    assert {"default", "smoke", "photos"} <= set(names)
    for name, text in shipped_sweeps():
        assert f"  {name}" in out and text[:40] in " ".join(out.split())
    assert "``" not in out and ":mod:" not in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "/no/such/folder"], "--data /no/such/folder: no such folder"),
        (["--sweep", "no_such_sweep"], "no sweep 'no_such_sweep'"),
        (["--class-map", "{a: [ant]}"], "--class-map goes with --data"),
        (["--workers", "0"], "--workers must be >= 1"),
        (["--sweep", "backbones"], "sweep 'backbones' trains on your photos and needs their folder"),
        (["--sweep", "photos"], "the photo protocol trains on your photos and needs their folder"),
    ],
)
def test_bad_input_is_reported_before_torch_is_imported(
    args: list[str], message: str, tmp_path: Path
) -> None:
    # one line, exit status 2, and torch never imported (so no 20 s wait for a typo)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "sweep", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"code": 2, "torch": False}
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_complete_study_exports_its_winner_once(
    write_sweep: SweepWriter, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # export: true calls tlbench.export.export_winner(study, ...) after the study completes; a failure is
    # one line and exit 1 (the study stays complete); a later run exports then, and only once
    calls: list[tuple[str, Any]] = []

    def failing(study: str, **kwargs: Any) -> Any:
        calls.append((study, kwargs))
        raise TlbenchError("the recommended arm is as_is: nothing to retrain")

    def working(study: str, **kwargs: Any) -> Any:
        calls.append((study, kwargs))
        return SimpleNamespace(model_uri=f"models:/{study}@champion")

    fake = ModuleType("tlbench.export")
    fake.export_winner = failing  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tlbench.export", fake)
    one = {"search": {"optimizer.lr": {"low": 1e-3, "high": 0.1}}, "budget": {"trials_per_cell": 1}}
    sweep = str(write_sweep("winner", **one, final={"seeds": [1]}, export=True))  # two trials
    assert sweep_main(["--sweep", sweep]) == 1
    out = capsys.readouterr().out
    assert "export: failed: the recommended arm is as_is" in out and "tlbench export --study winner" in out
    assert "study 'winner' complete" in out
    fake.export_winner = working  # type: ignore[attr-defined]
    assert sweep_main(["--sweep", sweep]) == 0
    assert "export: registered models:/winner@champion" in capsys.readouterr().out
    assert sweep_main(["--sweep", sweep]) == 0
    assert "export: already done" in capsys.readouterr().out
    assert [study for study, _ in calls] == ["winner", "winner"]
    assert calls[0][1]["tracking_uri"].startswith("sqlite:")


def test_no_export_where_the_file_says_so_or_there_is_no_final_phase() -> None:
    # export defaults to true for a tune-then-final study with finals, false for grids and pareto
    base: dict[str, Any] = {"base": TINY_BASE, "search": {"optimizer.lr": {"low": 1e-3, "high": 0.1}}}
    assert parse_sweep({**base, "final": {"seeds": [1]}}, name="t").exports
    assert not parse_sweep({**base, "final": {"seeds": [1]}, "export": False}, name="t").exports
    assert not parse_sweep({**base, "mode": "pareto"}, name="t").exports
    with pytest.raises(ConfigError, match="export: true needs final runs"):
        parse_sweep({**base, "export": True}, name="t")
