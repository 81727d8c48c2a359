"""tlbench sweep's command line: plain --help listing the shipped sweeps; input errors before torch loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tlbench.commands.sweep import main as sweep_main
from tlbench.sweep.request import shipped_sweeps

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
