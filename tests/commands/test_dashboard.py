from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial

from tlbench.commands import dashboard
from tlbench.commands.dashboard import ALL_CELLS, cell_factors, write_snapshot
from tlbench.errors import ConfigError

LR = FloatDistribution(1e-4, 1e-1, log=True)


def _trial(state: TrialState, value: float | None, lr: float) -> optuna.trial.FrozenTrial:
    return create_trial(
        state=state,
        value=value,
        params={"optimizer.lr": lr},
        distributions={"optimizer.lr": LR},
        user_attrs={"test_acc": 0.5},
        intermediate_values={1: 0.1} if state != TrialState.RUNNING else {},
    )


def _journal(path: Path) -> optuna.storages.JournalStorage:
    """A sweep's storage: meta, two cells (one trial still running), finals, and another user study."""
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    cells = {
        "s/data.n_per_class=5,strategy=scratch": [
            _trial(TrialState.COMPLETE, 0.4, 0.01),
            _trial(TrialState.PRUNED, 0.2, 0.05),
        ],
        "s/data.n_per_class=10,strategy=linear_probe": [
            _trial(TrialState.COMPLETE, 0.8, 0.001),
            _trial(TrialState.FAIL, None, 0.09),
            _trial(TrialState.RUNNING, None, 0.002),
        ],
        "s/final": [_trial(TrialState.COMPLETE, 0.7, 0.001)],
        "s/meta": [_trial(TrialState.COMPLETE, 0.0, 0.01)],
        "other/data.n_per_class=5,strategy=scratch": [_trial(TrialState.COMPLETE, 0.99, 0.01)],
    }
    for name, trials in cells.items():
        optuna.create_study(storage=storage, study_name=name, direction="maximize").add_trials(trials)
    return storage


@pytest.mark.parametrize(
    ("key", "factors"),
    [
        ("data.n_per_class=10,strategy=scratch", {"data.n_per_class": 10, "strategy": "scratch"}),  # typed
        ("data.n_per_class=null,strategy=as_is", {"data.n_per_class": None, "strategy": "as_is"}),  # null
        ("base", {}),  # the one cell of a sweep without factors
    ],
)
def test_cell_factors_read_the_cell_key(key: str, factors: dict[str, Any]) -> None:
    # the cell key's factor values, as the sweep file typed them
    assert cell_factors(key) == factors


def test_snapshot_merges_every_cell_into_one_study_with_the_factors_as_parameters(tmp_path: Path) -> None:
    source = _journal(tmp_path / "s.journal")
    target = tmp_path / "view.journal"
    lines = write_snapshot(source, "s", target)
    view = optuna.storages.JournalStorage(JournalFileBackend(str(target)))
    names = {s.study_name for s in view.get_all_studies()}
    # the whole-sweep study, each cell and the finals; never the bookkeeping or another user study
    assert names == {
        f"s {ALL_CELLS}",
        "s/data.n_per_class=5,strategy=scratch",
        "s/data.n_per_class=10,strategy=linear_probe",
        "s/final",
    }
    merged = optuna.load_study(study_name=f"s {ALL_CELLS}", storage=view).trials
    # the four finished tuning trials (the running one is not a result yet), each with its cell's factors
    assert sorted((t.params["strategy"], t.params["data.n_per_class"], t.state.name) for t in merged) == [
        ("linear_probe", 10, "COMPLETE"),
        ("linear_probe", 10, "FAIL"),
        ("scratch", 5, "COMPLETE"),
        ("scratch", 5, "PRUNED"),
    ]
    best = max((t for t in merged if t.state == TrialState.COMPLETE), key=lambda t: t.value or 0.0)
    assert best.value == pytest.approx(0.8) and best.params["optimizer.lr"] == pytest.approx(0.001)
    assert best.user_attrs["cell"] == "data.n_per_class=10,strategy=linear_probe"
    assert best.distributions["strategy"] == CategoricalDistribution(["scratch", "linear_probe"])
    # the list printed for the user: the whole sweep first, with its counts and best configuration
    first = lines[0].render(30)
    assert "whole sweep" in first and "4 trials (1 pruned, 1 failed)" in first
    assert "best val/acc 0.800 (data.n_per_class=10, strategy=linear_probe)" in first
    assert [line.what for line in lines[1:]] == ["finals", "cell", "cell"]
    # a snapshot is rewritten, not appended to: taking it twice gives the same studies
    write_snapshot(source, "s", target)
    view = optuna.storages.JournalStorage(JournalFileBackend(str(target)))
    assert len(optuna.load_study(study_name=f"s {ALL_CELLS}", storage=view).trials) == 4


def test_snapshot_of_an_unknown_study_is_a_one_line_error(tmp_path: Path) -> None:
    # a study name that is not in the storage names what to run
    with pytest.raises(ConfigError, match=r"no study 'nope'.*make sweep STUDY=nope"):
        write_snapshot(_journal(tmp_path / "s.journal"), "nope", tmp_path / "view.journal")


@pytest.mark.parametrize(
    ("argv", "journal", "port"),
    [
        ([], ".tlbench/dashboard/s.journal", "8080"),  # default: the whole-sweep snapshot
        (["--live", "--port", "5001"], ".tlbench/optuna/s.journal", "5001"),  # live: the study's own storage
    ],
)
def test_dashboard_opens_the_snapshot_or_the_live_storage_on_localhost(
    argv: list[str],
    journal: str,
    port: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    Path(".tlbench/optuna").mkdir(parents=True)
    _journal(Path(".tlbench/optuna/s.journal"))
    launched: list[list[str]] = []
    monkeypatch.setattr(dashboard.os, "execv", lambda exe, command: launched.append(command))
    monkeypatch.setattr(dashboard, "_executable", lambda: "optuna-dashboard")
    assert dashboard.main(["--study", "s", *argv]) == 0
    assert launched == [
        [
            "optuna-dashboard",
            journal,
            "--host",
            "127.0.0.1",
            "--port",
            port,
            "--storage-class",
            "JournalFileStorage",
        ]
    ]
    out = capsys.readouterr().out
    # the list of studies names each cell; the snapshot adds the whole-sweep study first
    assert "s/data.n_per_class=5,strategy=scratch" in out and f"http://127.0.0.1:{port}" in out
    assert (f"s {ALL_CELLS}" in out) is ("--live" not in argv)


def test_a_study_without_cells_yet_opens_live(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # a sweep's journal that holds nothing yet: no snapshot of nothing, the journal itself, and it says so
    Path(".tlbench/optuna").mkdir(parents=True)
    Path(".tlbench/optuna/new.journal").write_text("")
    launched: list[list[str]] = []
    monkeypatch.setattr(dashboard.os, "execv", lambda exe, command: launched.append(command))
    monkeypatch.setattr(dashboard, "_executable", lambda: "optuna-dashboard")
    assert dashboard.main(["--study", "new"]) == 0
    assert launched[0][1] == ".tlbench/optuna/new.journal"
    assert "no cells yet: opening its journal live" in capsys.readouterr().out
