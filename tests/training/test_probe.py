"""The converged linear probe: L-BFGS to the optimum, L2 chosen on validation, compared with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from tlbench.config import load_config
from tlbench.config.schema import ProbeConfig
from tlbench.run import train
from tlbench.training.inputs import trial_inputs
from tlbench.training.prepare import prepare
from tlbench.training.probe import fit_probe, minimise

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
    inputs = trial_inputs(prepare(cfg))
    reference = _sklearn_on_validation(inputs.data["train"], inputs.data["val"], inputs.data["test"])
    result = train(cfg)
    assert result.metrics["probe/converged"] == 1.0
    assert abs(result.metrics["test/acc"] - reference) <= 0.01 + 1e-9  # 1 point: 3 of 300 images, float-safe
