"""trainer.compile: the auto rule, the config, and compiled vs eager training on a fixed seed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tlbench.config import load_config
from tlbench.config.schema import TrainerConfig
from tlbench.errors import ConfigError
from tlbench.run import train
from tlbench.training import compiled as compiled_mod
from tlbench.training.compiled import CompiledTraining, compile_callback, expected_speedup, off_reason

from .test_prepare import TINY  # a tiny CNN on digits: 4 full batches an epoch


@pytest.fixture(autouse=True)
def _fresh_process_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled_mod, "_COMPILED", set())  # as if no graph were compiled yet


NET = nn.Linear(3, 2)  # the graph the auto rule decides about (its key: type, trainable mask, shape)


def _callback(
    steps_total: int, eager_step_s: float, **cfg: object
) -> tuple[CompiledTraining, SimpleNamespace]:
    trainer_cfg = TrainerConfig(batch_size=4, compile="auto", compile_after_steps=3, **cfg)  # type: ignore[arg-type]
    cb = CompiledTraining(trainer_cfg, device_kind="cpu", input_side=32)  # 32 px: the measured 1.64x
    cb._eager_steps = [eager_step_s] * 3  # CPU seconds of eager steps (the machine's load cannot move them)
    fake = SimpleNamespace(estimated_stepping_batches=steps_total, global_step=3)
    return cb, fake


def test_auto_compiles_only_when_the_saving_repays_the_compile() -> None:
    x = torch.zeros(4, 3)
    # 103 steps x 1 CPU-s: 100 left, saving 100 * (1 - 1/1.64) = 39 CPU-s < 90 -> eager, and why
    short, fake = _callback(103, 1.0)
    short._auto(NET, x, fake)
    assert not short.decision.compiled and short.decision.reason.startswith("auto: not compiled")
    # 1003 steps: 1000 left, saving 390 CPU-s > 90 -> compile
    long, fake = _callback(1003, 1.0)
    long._auto(NET, x, fake)
    assert long.decision.compiled and "saving 390 CPU-s vs compile 90 CPU-s" in long.decision.reason


def test_auto_counts_the_trials_the_plan_runs_on_the_same_graph() -> None:
    x = torch.zeros(4, 3)
    alone, fake = _callback(103, 1.0, planned_trials=1)  # this trial only: 39 CPU-s saving < 90
    alone._auto(NET, x, fake)
    assert not alone.decision.compiled
    # the same short trial, but the sweep plans 5 on this graph in this process: 100 + 4 x 103 steps
    planned, fake = _callback(103, 1.0, planned_trials=5)
    planned._auto(NET, x, fake)
    assert planned.decision.compiled
    assert "512 eager steps planned on this graph (5 trial(s))" in planned.decision.reason


@pytest.mark.parametrize(("side", "speedup"), [(16, 1.64), (32, 1.64), (64, 1.64), (128, 1.05), (224, 1.05)])
def test_expected_speedup_is_the_nearest_measurement(side: int, speedup: float) -> None:
    # at 224 px a compiled step was only 1.05x as fast (convolutions dominate); at 32 px 1.64x
    assert expected_speedup(True, side=side) == speedup
    assert expected_speedup(False, side=side) == 1.6  # a GPU: an assumption, not a measurement


def test_auto_counts_a_graph_this_process_compiled_as_almost_free() -> None:
    x = torch.zeros(4, 3)
    first, fake = _callback(103, 1.0)  # 39 CPU-s saving: not worth a cold compile
    first._auto(NET, x, fake)
    assert not first.decision.compiled
    compiled_mod._COMPILED.add(compiled_mod.graph_key(NET, x))
    again, fake = _callback(103, 1.0)
    again._auto(NET, x, fake)
    assert again.decision.compiled and "already compiled in this process" in again.decision.reason


def test_compile_cost_override_changes_the_decision() -> None:
    x = torch.zeros(4, 3)
    cb, fake = _callback(103, 1.0, compile_cost_s=10.0)  # 39 CPU-s saving > 10
    cb._auto(NET, x, fake)
    assert cb.decision.compiled


def test_compile_modes_are_checked_and_yaml_booleans_accepted() -> None:
    assert compile_callback(TrainerConfig(compile="false"), device_kind="cpu", input_side=32) is None
    assert compile_callback(TrainerConfig(compile="True"), device_kind="cpu", input_side=32) is not None
    assert compile_callback(TrainerConfig(compile="auto"), device_kind="mps", input_side=32) is None
    assert off_reason(TrainerConfig(compile="auto"), device_kind="mps") == "trainer.compile=auto: not on MPS"
    assert off_reason(TrainerConfig(compile="false"), device_kind="cpu") == "trainer.compile=false"
    assert load_config(["trainer.compile=false"]).trainer.compile in ("false", "False")
    with pytest.raises(ConfigError, match=r"trainer\.compile must be auto, true or false"):
        load_config(["trainer.compile=sometimes"])


def test_compiled_training_matches_eager_and_its_compile_time_is_counted() -> None:
    eager = train(load_config(TINY))  # trainer.compile=false
    compiled = train(load_config([*TINY, "trainer.compile=true"]))
    assert eager.status == compiled.status == "completed"
    assert compiled.tags["compile"] == "on" and compiled.tags["compile_reason"] == "trainer.compile=true"
    assert eager.tags["compile"] == "off"
    # same seed, same data, same steps: fused kernels round differently, so equal within noise
    assert compiled.metrics["test/acc"] == pytest.approx(eager.metrics["test/acc"], abs=0.05)
    assert compiled.metrics["train/loss"] == pytest.approx(eager.metrics["train/loss"], rel=0.05, abs=0.02)
    # the compile happened inside the fit: counted in its seconds (and device-hours), and shown apart
    seconds = compiled.metrics["cost/compile_seconds"]
    assert seconds > 0.5
    assert compiled.metrics["cost/fit_seconds"] > seconds
    threads = int(compiled.tags["threads"])
    assert compiled.metrics["cost/device_hours"] == pytest.approx(
        compiled.metrics["cost/fit_cpu_seconds"] / threads / 3600
    )
    assert "cost/compile_seconds" not in eager.metrics or eager.metrics["cost/compile_seconds"] == 0.0
