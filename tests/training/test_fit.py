"""The fit's parts: the converged linear probe (L-BFGS to the optimum, L2 chosen on validation, compared
with scikit-learn) and compiled training steps."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from tlbench.config import load_config
from tlbench.config.schema import ProbeConfig, RunConfig, TrainerConfig
from tlbench.errors import ConfigError
from tlbench.run import train
from tlbench.training import fit as fit_module
from tlbench.training.fit import (
    CompiledTraining,
    compile_callback,
    expected_speedup,
    fit_probe,
    minimise,
)
from tlbench.training.inputs import TrialInputs, feature_cache, plan_inputs, trial_inputs
from tlbench.training.network import prepare

from .test_network import TINY  # a tiny CNN on digits: 4 full batches an epoch

GRID = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]


def _blobs(n: int, seed: int, shift: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centres = torch.randn(3, 16, generator=g) * shift
    return centres[y] + torch.randn(n, 16, generator=g), y


def test_lbfgs_reaches_the_optimum_scikit_learn_finds() -> None:
    # same objective (mean CE + l2/2 ||W||^2 == sklearn's C-weighted sum with C = 1/(l2 n)): same weights
    x, y = _blobs(90, seed=0)
    head = nn.Linear(16, 3)
    evaluations, iterations, converged = minimise(head, x, y, l2=0.01, cfg=ProbeConfig())
    assert converged and 0 < iterations <= evaluations
    sk = LogisticRegression(C=1 / (0.01 * len(y)), tol=1e-10, max_iter=10_000).fit(x.numpy(), y.numpy())
    # multinomial weights are defined up to a shift shared by all classes: compare centred weights
    ours = head.weight.detach().numpy()
    assert np.allclose(ours - ours.mean(0), sk.coef_ - sk.coef_.mean(0), atol=2e-3)


def test_l2_is_chosen_on_validation_and_ties_keep_the_strongest_penalty() -> None:
    # far-apart blobs: every l2 separates validation perfectly, so the tie goes to the strongest
    train_set, val_set = _blobs(60, seed=1, shift=20.0), _blobs(30, seed=1, shift=20.0)
    fit = fit_probe(nn.Linear(16, 3), train_set, val_set, ProbeConfig(l2_grid=GRID))
    assert fit.val_acc == 1.0 and fit.l2 == max(GRID)
    assert [l2 for l2, _ in fit.tried] == sorted(GRID, reverse=True)


def test_a_fixed_l2_fits_once() -> None:
    train_set, val_set = _blobs(60, seed=2), _blobs(30, seed=3)
    fit = fit_probe(nn.Linear(16, 3), train_set, val_set, ProbeConfig(l2=0.05))
    assert fit.l2 == 0.05 and len(fit.tried) == 1 and fit.converged


def _trial_inputs(cfg: RunConfig) -> TrialInputs:
    """The inputs a trial of ``cfg`` trains on, as :func:`tlbench.run.train` builds them."""
    trial = prepare(cfg)
    cfg, model, splits = trial.cfg, trial.model, trial.splits
    plan = plan_inputs(
        cfg, model, splits, device=trial.device, precision=trial.precision, channels_last=trial.channels_last
    )
    cache = feature_cache(cfg.trainer) if cfg.trainer.cache_features else None
    return trial_inputs(model, splits, plan, cache=cache)


def _sklearn_on_validation(train_xy, val_xy, test_xy):  # type: ignore[no-untyped-def]
    """scikit-learn's logistic regression with C chosen on the same validation split (ties: smallest C)."""
    (xtr, ytr), (xva, yva), (xte, yte) = ((x.numpy(), y.numpy()) for x, y in (train_xy, val_xy, test_xy))
    best = None
    for l2 in sorted(GRID, reverse=True):
        model = LogisticRegression(C=1 / (l2 * len(ytr)), max_iter=10_000).fit(xtr, ytr)
        score = model.score(xva, yva)
        if best is None or score > best[0]:
            best = (score, model)
    assert best is not None
    return best[1].score(xte, yte)


@pytest.mark.parametrize("n_per_class", [5, 20])
def test_probe_matches_scikit_learn_on_the_same_cached_features(n_per_class: int) -> None:
    # digits through the real backbone: within 1 point of sklearn's test accuracy on the same features
    overrides = [
        "data=digits", "strategy=linear_probe", "tracking=disabled", f"data.n_per_class={n_per_class}",
        "data.max_val_per_class=20", "data.max_test_per_class=30", f"strategy.probe.l2_grid={GRID}",
    ]  # fmt: skip
    cfg = load_config(overrides)
    inputs = _trial_inputs(cfg)
    reference = _sklearn_on_validation(inputs.data["train"], inputs.data["val"], inputs.data["test"])
    result = train(cfg)
    assert result.metrics["probe/converged"] == 1.0
    assert abs(result.metrics["test/acc"] - reference) <= 0.01 + 1e-9  # 1 point: 3 of 300 images, float-safe


@pytest.fixture(autouse=True)
def _fresh_process_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fit_module, "_COMPILED", set())  # as if no graph were compiled yet


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
    fit_module._COMPILED.add(fit_module.graph_key(NET, x))
    again, fake = _callback(103, 1.0)
    again._auto(NET, x, fake)
    assert again.decision.compiled and "already compiled in this process" in again.decision.reason


def test_compile_cost_override_changes_the_decision() -> None:
    x = torch.zeros(4, 3)
    cb, fake = _callback(103, 1.0, compile_cost_s=10.0)  # 39 CPU-s saving > 10
    cb._auto(NET, x, fake)
    assert cb.decision.compiled


def test_compile_modes_are_checked_and_yaml_booleans_accepted() -> None:
    off = compile_callback(TrainerConfig(compile="false"), device_kind="cpu", input_side=32)
    assert off == (None, "trainer.compile=false")
    on, reason = compile_callback(TrainerConfig(compile="True"), device_kind="cpu", input_side=32)
    assert on is not None and reason is None
    mps = compile_callback(TrainerConfig(compile="auto"), device_kind="mps", input_side=32)
    assert mps == (None, "trainer.compile=auto: not on MPS")
    assert load_config(["trainer.compile=false"]).trainer.compile in ("false", "False")
    with pytest.raises(ConfigError, match=r"trainer\.compile must be auto, true or false"):
        load_config(["trainer.compile=sometimes"])


def test_compiled_training_matches_eager_and_its_compile_time_is_counted() -> None:
    # a cold start: a graph an earlier test of this process compiled (test_early_stopping's compiled
    # fit runs first since the merge of test_compiled into this file) costs ~0 s, truthfully, here
    torch._dynamo.reset()
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
