"""Reliability of one trial (issue 6): bad data end to end, bad runs, tracking outages, safe defaults.

Sweep-level reliability (kill -9 at several points, Ctrl-C, an out-of-memory trial in a sweep, an
unreachable study storage) is in ``tests/sweep/test_crash_points.py``.
"""

from __future__ import annotations

import ast
import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from mlflow.tracking import MlflowClient
from PIL import Image

from tlbench.cli import main as cli_main
from tlbench.config import load_config
from tlbench.errors import DataError, TrackingError
from tlbench.run import train

SRC = Path(__file__).resolve().parents[1] / "src" / "tlbench"
QUICK = ["data=synthetic", "trainer=quick"]
SECRET = "s3cr3t-pw"


# -- bad data, end to end ----------------------------------------------------------------------


def _solid(colour: tuple[int, int, int], size: tuple[int, int] = (20, 14)) -> Image.Image:
    return Image.new("RGB", size, colour)


def _bad_tree(root: Path) -> Path:
    """train/ + test/ with every kind of awkward file; the readable ones are counted in the docstring.

    train/cats: 8 readable (RGB, CMYK, RGBA, 16-bit, grayscale JPEG/PNG, the leaked one) + empty.jpg,
    truncated.jpg, text.jpg (text behind a .jpg name); train/dogs: 8; train/lonely: 1 image;
    train/empty_class: no image at all; test/cats: 2 (one a copy of train/cats/leak.png); test/dogs: 2.
    """
    cats, dogs = root / "train" / "cats", root / "train" / "dogs"
    for folder in (cats, dogs, root / "train" / "lonely", root / "train" / "empty_class"):
        folder.mkdir(parents=True)
    _solid((200, 30, 40)).save(cats / "rgb.jpg", quality=95)
    _solid((0, 128, 255)).convert("CMYK").save(cats / "cmyk.jpg", quality=95)
    Image.new("RGBA", (20, 14), (10, 20, 30, 128)).save(cats / "rgba.png")
    Image.fromarray(np.full((14, 20), 40000, dtype=np.uint16)).save(cats / "deep16.png")
    assert Image.open(cats / "deep16.png").mode == "I;16"
    Image.new("L", (20, 14), 100).save(cats / "gray.png")
    Image.new("L", (20, 14), 60).save(cats / "gray.jpg")
    _solid((210, 40, 50)).save(cats / "rgb2.png")
    _solid((9, 9, 9)).save(cats / "leak.png")
    (cats / "empty.jpg").write_bytes(b"")
    full = (cats / "rgb.jpg").read_bytes()
    (cats / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (cats / "text.jpg").write_text("this is not a JPEG")
    for i in range(8):
        _solid((20 + 10 * i, 200, 20)).save(dogs / f"{i}.png")
    _solid((120, 120, 250)).save(root / "train" / "lonely" / "only.png")
    (root / "train" / "empty_class" / "README.txt").write_text("no images yet")
    (root / "test" / "cats").mkdir(parents=True)
    (root / "test" / "dogs").mkdir(parents=True)
    _solid((205, 35, 45)).save(root / "test" / "cats" / "t0.png")
    (root / "test" / "cats" / "leak_copy.png").write_bytes((cats / "leak.png").read_bytes())
    for i in range(2):
        _solid((25 + 10 * i, 190, 30)).save(root / "test" / "dogs" / f"t{i}.png")
    return root


def _warnings(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_bad_image_folder_trains_end_to_end_and_names_every_problem(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # one full trial on a folder with broken, odd-mode, duplicated and missing images completes,
    # and the log names each problem file or class
    root = _bad_tree(tmp_path / "photos")
    cfg = load_config(["data=imagefolder", f"data.root={root}", "data.resolution=32", "trainer=quick",
                       "tracking=disabled"])  # fmt: skip
    with caplog.at_level(logging.WARNING):
        result = train(cfg)
    assert result.status == "completed" and 0.0 <= result.metrics["test/acc"] <= 1.0
    text = _warnings(caplog)
    # unreadable files: each named with its reason, and skipped
    unreadable = next(r.getMessage() for r in caplog.records if "unreadable image files" in r.getMessage())
    assert "skipped 3 unreadable" in unreadable
    for name in ("cats/empty.jpg: empty file", "cats/truncated.jpg", "cats/text.jpg"):
        assert name in unreadable, unreadable
    # odd colour modes (CMYK, RGBA, 16-bit, grayscale) are decoded, not skipped: 8 cats + 8 dogs + 1 lonely
    # in the pool, carved val taken out (2 per big class), so 6 + 6 + 1 train
    for name in ("cmyk.jpg", "rgba.png", "deep16.png", "gray.png", "gray.jpg"):
        assert name not in unreadable
    assert result.params["n_classes"] == 3 and result.params["n_train"] == 13
    # leakage: the file in both train/ and test/ is named with both paths
    assert "leakage" in text and "train/cats/leak.png = test/cats/leak_copy.png" in text
    # the empty class folder is skipped by name; the one-image class trains but is named as too small
    # to appear in the carved val split, and as absent from test/
    assert "empty_class (no image files)" in text
    assert "carved val split" in text and "lonely (1 in the pool)" in text
    assert "test/ has no usable images of classes lonely" in text


def test_one_image_class_with_n_per_class_is_a_clear_error_before_tracking(
    tmp_path: Path, mlflow_uri: str
) -> None:
    # n_per_class=2 cannot be drawn from a class with one image: a DataError naming the class and the
    # largest valid value, raised before an MLflow run exists
    root = _bad_tree(tmp_path / "photos")
    cfg = load_config(["data=imagefolder", f"data.root={root}", "data.resolution=32", "trainer=quick",
                       "data.n_per_class=2"])  # fmt: skip
    with pytest.raises(DataError, match=r"'lonely' \(1 images\).*data\.n_per_class <= 1"):
        train(cfg)
    assert not _all_runs(mlflow_uri)


# -- bad runs ----------------------------------------------------------------------------------


def _all_runs(uri: str) -> list[Any]:
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(ids)) if ids else []


class _Poison(Callback):
    """At the second step, make the loss NaN (NaN weights) or +inf (one class's logit at -inf)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step != 1:
            return
        with torch.no_grad():
            for p in pl_module.parameters():
                if not p.requires_grad:
                    continue
                if self.kind == "nan":
                    p.fill_(math.nan)
                elif p.ndim == 1:  # the head's bias: every class-0 sample gets an infinite loss
                    p[0] = -math.inf


class _OutOfMemory(Callback):
    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def _check_failed_run(uri: str, run_id: str | None, status: str) -> dict[str, float]:
    run = MlflowClient(uri).get_run(run_id or "")
    assert run.info.status == "FAILED" and run.data.tags["status"] == status
    metrics = run.data.metrics
    # the compute spent is still on record
    assert metrics["cost/device_hours"] > 0 and metrics["cost/fit_seconds"] > 0
    assert metrics["cost/train_flops"] > 0
    assert "test/acc" not in metrics
    return metrics


@pytest.mark.parametrize(("kind", "loss"), [("nan", "nan"), ("inf", "inf")])
def test_non_finite_loss_fails_the_trial_with_its_cost(mlflow_uri: str, kind: str, loss: str) -> None:
    # NaN or +inf loss ends the trial as "failed: diverged: training loss is nan/inf"; cost and status logged
    result = train(
        load_config([*QUICK, "strategy=linear_probe", "strategy.probe.solver=sgd"]), callbacks=[_Poison(kind)]
    )
    assert result.status.startswith(f"failed: diverged: training loss is {loss}"), result.status
    _check_failed_run(mlflow_uri, result.run_id, result.status)


def test_diverging_learning_rate_fails_the_trial(mlflow_uri: str) -> None:
    # the largest LR the schema allows, on plain SGD, blows a fine-tuned network up: the loss goes from
    # 1.6 to over 100 but stays finite (chance accuracy): recorded as diverged, not as a completed result
    overrides = [*QUICK, "strategy=full_finetune", "optimizer=sgd", "optimizer.lr=10", "schedule=constant",
                 "data.n_per_class=4"]  # fmt: skip
    result = train(load_config(overrides))
    assert result.status.startswith("failed: diverged: training loss exploded to"), result.status
    assert "in epoch 2" in result.status and [h.epoch for h in result.history] == [1]
    _check_failed_run(mlflow_uri, result.run_id, result.status)


def test_out_of_memory_fails_the_trial_frees_memory_and_keeps_its_cost(
    mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an OOM in a training step: status "failed: out of memory (…)", memory released, cost still logged
    released: list[bool] = []
    monkeypatch.setattr("tlbench.training.device.release_memory", released.append)
    result = train(
        load_config([*QUICK, "strategy=linear_probe", "strategy.probe.solver=sgd"]),
        callbacks=[_OutOfMemory()],
    )
    assert result.status.startswith("failed: out of memory (CUDA out of memory"), result.status
    assert released == [False]  # on the CPU: collected; the CUDA cache only on a GPU
    _check_failed_run(mlflow_uri, result.run_id, result.status)


def test_releasing_memory_after_oom_empties_the_cuda_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    from tlbench.training import device

    emptied: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    device.release_memory(True)
    device.release_memory(False)
    assert emptied == [1]


# -- tracking outages before training ----------------------------------------------------------


def _unusable_uris(tmp_path: Path) -> list[str]:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store's directory should be")
    return [
        f"sqlite:///{blocker}/mlflow.db",  # cannot be created, even as root
        f"postgresql+psycopg2://tlbench:{SECRET}@127.0.0.1:9/mlflow",  # nothing listens on port 9
    ]


@pytest.mark.parametrize("which", [0, 1], ids=["sqlite-in-a-file", "postgresql-refused"])
def test_unusable_tracking_database_fails_fast_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], which: int
) -> None:
    # `tlbench train` with an unusable MLflow database: exit 2, one line without the password, within
    # seconds (MLflow alone retries a refused database connection for ~100 s), nothing trained
    uri = _unusable_uris(tmp_path)[which]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    def no_training(cfg: Any) -> Any:
        raise AssertionError("training started")

    monkeypatch.setattr("tlbench.run.prepare", no_training)
    start = time.perf_counter()
    code = cli_main(["train", *QUICK])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err.strip()
    assert code == 2 and elapsed < 30
    assert err.count("\n") == 0 and "not usable" in err and "Traceback" not in err, err
    assert SECRET not in err
    with pytest.raises(TrackingError) as info:
        train(load_config(QUICK))
    assert SECRET not in str(info.value)


def test_tracking_password_is_not_logged_with_the_config(
    mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a trial's config.yaml artifact holds its tracking URI: the password is masked there
    from tlbench.tracking import MlflowRun

    real_start = MlflowRun.start.__func__  # type: ignore[attr-defined]

    def start(cls: Any, **kwargs: Any) -> Any:  # the run lands in the test store whatever the URI says
        return real_start(cls, **{**kwargs, "tracking_uri": mlflow_uri})

    monkeypatch.setattr(MlflowRun, "start", classmethod(start))
    monkeypatch.setattr("tlbench.run.check_reachable", lambda uri: uri)
    class_map = (
        "strategy.class_map={pattern_0: [ant], pattern_1: [bee], pattern_2: ['0'], pattern_3: [n01440764]}"
    )
    cfg = load_config([*QUICK, "strategy=as_is", class_map])  # as-is: nothing to train, fast
    secret_uri = f"postgresql://tlbench:{SECRET}@db.example/mlflow"
    cfg = replace(cfg, tracking=replace(cfg.tracking, tracking_uri=secret_uri))
    result = train(cfg)
    text = mlflow.artifacts.load_text(f"runs:/{result.run_id}/config.yaml")
    assert "postgresql://tlbench:***@db.example/mlflow" in text and SECRET not in text


# -- safe defaults -----------------------------------------------------------------------------


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """(dotted name, call) for every call whose function is a name or attribute chain."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, func = [], node.func
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                parts.append(func.id)
            found.append((".".join(reversed(parts)), node))
    return found


def _sources() -> list[tuple[Path, ast.AST]]:
    return [(path, ast.parse(path.read_text(), filename=str(path))) for path in sorted(SRC.rglob("*.py"))]


def test_no_shell_anywhere_in_the_package() -> None:
    # no subprocess call with shell=True, no os.system / os.popen / commands run through a shell
    offences = []
    for path, tree in _sources():
        for name, call in _calls(tree):
            where = f"{path.relative_to(SRC)}:{call.lineno} {name}"
            if name in {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"}:
                offences.append(where)
            for keyword in call.keywords:
                if keyword.arg == "shell" and not (
                    isinstance(keyword.value, ast.Constant) and keyword.value.value is False
                ):
                    offences.append(f"{where} shell=")
    assert not offences, offences
    assert any("subprocess" in path.read_text() for path, _ in _sources())  # the scan sees real code


def test_every_torch_load_is_weights_only() -> None:
    # torch.load unpickles arbitrary objects unless weights_only=True: every call in src/ sets it
    loads = [(path, call) for path, tree in _sources() for name, call in _calls(tree) if name == "torch.load"]
    assert loads  # the scan finds the weight and feature-cache loaders
    for path, call in loads:
        flag = next((k.value for k in call.keywords if k.arg == "weights_only"), None)
        assert isinstance(flag, ast.Constant) and flag.value is True, f"{path}:{call.lineno}"


def test_mlflow_ui_binds_localhost(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `make ui`: MLflow's UI on 127.0.0.1 only, started without a shell; a password is not printed
    from tlbench import cli

    calls: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setattr(cli.os, "execve", lambda exe, argv, env: calls.append((list(argv), dict(env))))
    store = f"postgresql://u:{SECRET}@db.example/mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    assert cli.ui(["--port", "5123"]) == 0
    argv, env = calls[0]
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and "0.0.0.0" not in argv
    assert argv[argv.index("--port") + 1] == "5123"
    # the store reaches mlflow through its environment: the password is neither printed nor in `ps`
    assert env["MLFLOW_BACKEND_STORE_URI"] == store and not any(SECRET in a for a in argv)
    assert SECRET not in capsys.readouterr().out


def test_ui_of_a_tracking_server_points_at_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # an http tracking URI: the server has its own UI; a local `mlflow ui` would show an unrelated store
    from tlbench import cli

    monkeypatch.setattr(cli.os, "execve", lambda *a: pytest.fail("no local UI for a remote server"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert cli.ui([]) == 0
    assert "http://tracking.example:5000" in capsys.readouterr().out
