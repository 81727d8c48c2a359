"""Where a sweep can be cut short, and what the next run of the same command finds (issue 6).

kill -9 mid-trial is in ``test_workers.py``; here the process dies at two more points: while MLflow
writes a trial's final metrics, and inside the Optuna storage write that closes a trial (after its
MLflow run ended, before Optuna knows). Also: Ctrl-C on a real process, an out-of-memory trial, and
a study storage or tracking store that cannot be used (nothing starts).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from optuna.trial import TrialState

from tlbench.cli import main as cli_main
from tlbench.commands.sweep import main as sweep_main
from tlbench.run import train as real_train
from tlbench.sweep.plan import FAIL_KIND, FAIL_REASON, is_counted

from .conftest import DYING, SLOW_EPOCHS, TINY_BASE, SweepWriter

# One cell, two tuning trials and one final: the trials an uninterrupted run finishes.
ONE_CELL: dict[str, Any] = {
    "factors": {"data.n_per_class": [4]},
    "search": {"optimizer.lr": {"low": 1e-3, "high": 0.1, "log": True}},
    "budget": {"trials_per_cell": 2},
    "final": {"seeds": [1]},
}
CELL = "data.n_per_class=4"
UNINTERRUPTED = 3  # 2 tuning + 1 final
SECRET = "s3cr3t-pw"

DIE_IN_FINAL_METRICS = """
from tlbench.tracking.runs import MlflowRun
original, seen = MlflowRun.log_metrics, []
def log_metrics(self, metrics, *, step=None):
    if "cost/device_hours" in metrics:  # a trial's final metrics
        seen.append(1)
        if len(seen) == 2:
            items = sorted(metrics.items())
            original(self, dict(items[: len(items) // 2]), step=step)  # half of them written...
            os.kill(os.getpid(), signal.SIGKILL)  # ...then the process dies
    return original(self, metrics, step=step)
MlflowRun.log_metrics = log_metrics
"""

DIE_IN_STORAGE_WRITE = """
from optuna.storages import JournalStorage
original, seen = JournalStorage.set_trial_state_values, []
def set_trial_state_values(self, trial_id, state, values=None):
    if state.is_finished():  # study.tell closing a trial
        seen.append(1)
        if len(seen) == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # before the write reaches the journal
    return original(self, trial_id, state, values)
JournalStorage.set_trial_state_values = set_trial_state_values
"""


def _die_at(patch: str, sweep: Path) -> None:
    script = DYING.format(patch=textwrap.dedent(patch))
    proc = subprocess.run(
        [sys.executable, "-c", script, str(sweep)], capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


def _completed(study: Any) -> set[tuple[str, int, Any]]:
    return {
        (name, t.number, t.datetime_complete)
        for name in (CELL, "final")
        for t in study.trials(name)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    }


def _check_resumed(study: Any, before: set[Any], killed_number: int) -> None:
    """After the rerun: complete, nothing recomputed, the killed trial failed as died, its run ended."""
    killed = study.trials(CELL)[killed_number]
    assert killed.state == TrialState.FAIL and killed.user_attrs[FAIL_KIND] == "died"
    assert before <= _completed(study)  # finished trials untouched
    assert sum(is_counted(t) for t in study.trials(CELL)) == 2
    assert sum(is_counted(t) for t in study.trials("final")) == 1
    children = study.children()
    keys = Counter((r.data.tags["optuna_study"], r.data.tags["trial_number"]) for r in children)
    assert max(keys.values()) == 1  # one run per trial: nothing ran twice
    (killed_run,) = [r for r in children if r.data.tags["optuna_study"] == f"{study.study}/{CELL}"
                     and r.data.tags["trial_number"] == str(killed_number)]  # fmt: skip
    assert killed_run.info.status == "KILLED" and killed_run.data.tags["status"] == "failed: worker died"
    results = [r for r in children if r.data.tags["status"] in ("completed", "pruned")]
    assert len(results) == UNINTERRUPTED  # as many results as an uninterrupted run, none counted twice
    assert all(r.info.status != "RUNNING" for r in study.runs())
    parents = study.parents()
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"


def test_kill_9_while_mlflow_writes_final_metrics(write_sweep: SweepWriter, reader: Any) -> None:
    # the second trial's process dies halfway through writing its final metrics; a rerun completes
    sweep = write_sweep("diemetrics", **ONE_CELL)
    _die_at(DIE_IN_FINAL_METRICS, sweep)
    study = reader("diemetrics")
    trials = study.trials(CELL)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.RUNNING]
    (half,) = [r for r in study.children() if r.info.status == "RUNNING"]
    assert "cost/device_hours" in half.data.metrics and "test/acc" not in half.data.metrics  # half written
    before = _completed(study)
    assert sweep_main(["--sweep", str(sweep)]) == 0
    _check_resumed(study, before, killed_number=1)


def test_kill_9_inside_the_optuna_storage_write(write_sweep: SweepWriter, reader: Any) -> None:
    # the process dies in study.tell: MLflow already says "completed", Optuna still RUNNING. The rerun
    # redoes the trial, so its MLflow run must stop claiming a result (else the report counts it twice)
    sweep = write_sweep("diestorage", **ONE_CELL)
    _die_at(DIE_IN_STORAGE_WRITE, sweep)
    study = reader("diestorage")
    trials = study.trials(CELL)
    assert trials[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert trials[1].state == TrialState.RUNNING
    (ended,) = [r for r in study.children() if r.data.tags["trial_number"] == "1"]
    assert ended.info.status in ("FINISHED", "KILLED") and ended.data.tags["status"] in (
        "completed",
        "pruned",
    )
    before = _completed(study)
    assert sweep_main(["--sweep", str(sweep)]) == 0
    _check_resumed(study, before, killed_number=1)


def test_ctrl_c_on_the_sweep_process_stops_cleanly_and_resumes(
    write_sweep: SweepWriter, reader: Any, tmp_path: Path
) -> None:
    # SIGINT to a real `tlbench sweep` mid-trial: exit 130, the trial failed as interrupted, nothing
    # left RUNNING, parent KILLED; the same command again completes the study
    sweep = write_sweep("sigint", **ONE_CELL, base=[*TINY_BASE, "trainer.epochs=20"])
    log = tmp_path / "sweep.err"
    # the interrupted process trains slowly (0.3 s per epoch): a loaded machine still sees a trial running
    script = DYING.format(patch=textwrap.dedent(SLOW_EPOCHS))
    with log.open("w") as err_file:  # a file, not a pipe: a full pipe would block the sweep
        # Ctrl-C as a terminal sends it: SIGINT at its default in the sweep, even when this test runs
        # where it is ignored (a job started with `&` without job control inherits SIGINT ignored)
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(sweep)],
            stdout=subprocess.DEVNULL,
            stderr=err_file,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    study = reader("sigint")

    def training() -> bool:
        try:
            return any(r.info.status == "RUNNING" for r in study.children())
        except AssertionError:  # experiment not created yet
            return False

    try:
        deadline = time.monotonic() + 300  # start-up includes the plan's throughput probe; a loaded CPU
        while not training():
            assert proc.poll() is None and time.monotonic() < deadline, "no trial started"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    err = log.read_text()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    (interrupted,) = [t for t in study.trials(CELL) if t.state == TrialState.FAIL]
    assert interrupted.user_attrs[FAIL_KIND] == "interrupted"
    assert not [t for t in study.trials(CELL) if t.state == TrialState.RUNNING]
    assert all(r.info.status != "RUNNING" for r in study.runs())
    parent = study.parents()[0]
    assert parent.info.status == "KILLED" and parent.data.tags["status"] == "interrupted"
    # the same command resumes the study
    assert sweep_main(["--sweep", str(sweep)]) == 0
    assert sum(is_counted(t) for t in study.trials(CELL)) == 2
    assert sum(is_counted(t) for t in study.trials("final")) == 1
    assert study.parents()[0].info.status == "FINISHED"


class _OutOfMemory(Callback):
    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_out_of_memory_trial_is_recorded_failed_and_the_sweep_goes_on(
    write_sweep: SweepWriter, reader: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the LR=0.5 configuration runs out of memory: it counts as failed (a property of the configuration),
    # its run keeps its cost, and the cell's final uses the other configuration
    def fake_train(cfg: Any, *, callbacks: Any = ()) -> Any:
        extra = [_OutOfMemory()] if cfg.optimizer.lr > 0.05 else []
        return real_train(cfg, callbacks=[*callbacks, *extra])

    monkeypatch.setattr("tlbench.sweep.worker.train", fake_train)
    sweep = write_sweep(
        "oom",
        **{**ONE_CELL, "search": {"optimizer.lr": {"choices": [0.01, 0.5]}}, "sampler": {"name": "grid"}},
    )
    assert sweep_main(["--sweep", str(sweep)]) == 0
    study = reader("oom")
    (oom,) = [t for t in study.trials(CELL) if t.state == TrialState.FAIL]
    assert oom.params["optimizer.lr"] == 0.5 and oom.user_attrs[FAIL_KIND] == "config"
    assert oom.user_attrs[FAIL_REASON].startswith("out of memory")
    assert sum(is_counted(t) for t in study.trials(CELL)) == 2
    (run,) = [r for r in study.children() if r.info.status == "FAILED"]
    assert run.data.tags["status"].startswith("failed: out of memory")
    assert run.data.metrics["cost/device_hours"] > 0 and run.data.metrics["cost/train_samples"] > 0
    (final,) = study.trials("final")
    assert final.state == TrialState.COMPLETE and final.params["optimizer.lr"] == 0.01
    assert study.parents()[0].info.status == "FINISHED"


def _one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    start = time.perf_counter()
    code = cli_main(argv)
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err.strip()
    assert code == 2 and elapsed < 30, (code, elapsed, err)
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert SECRET not in err
    return err


def test_unreachable_study_storage_stops_the_sweep_before_anything_runs(
    write_sweep: SweepWriter, reader: Any, mlflow_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # --storage on a database nobody listens on: exit 2, one line, the password not shown, no run created
    sweep = write_sweep("nostore", **ONE_CELL)
    storage = f"postgresql://u:{SECRET}@127.0.0.1:9/db"
    err = _one_line_exit_2(["sweep", "--sweep", str(sweep), "--storage", storage], capsys)
    assert "Optuna storage postgresql://u:***@127.0.0.1:9/db is not usable" in err
    from mlflow.tracking import MlflowClient

    assert MlflowClient(mlflow_uri).get_experiment_by_name("nostore") is None


@pytest.mark.parametrize("which", ["sqlite-in-a-file", "postgresql-refused"])
def test_unusable_tracking_store_stops_the_sweep_before_anything_runs(
    write_sweep: SweepWriter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    which: str,
) -> None:
    # an MLflow store that cannot be used: exit 2 in one line, before the study's storage is even created
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store's directory should be")
    uri = {
        "sqlite-in-a-file": f"sqlite:///{blocker}/mlflow.db",
        "postgresql-refused": f"postgresql+psycopg2://u:{SECRET}@127.0.0.1:9/mlflow",
    }[which]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    sweep = write_sweep("notrack", **ONE_CELL)
    err = _one_line_exit_2(["sweep", "--sweep", str(sweep)], capsys)
    assert "MLflow tracking store" in err and "not usable" in err
    assert not (tmp_path / ".tlbench" / "optuna" / "notrack.journal").exists()
