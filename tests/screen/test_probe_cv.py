from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from tlbench.screen.probe_cv import cv_folds, probe_cv_accuracy, probe_cv_predictions


def _two_clusters(n_per_class: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n_per_class)
    features = np.where(labels[:, None] == 0, -5.0, 5.0) * np.array([1.0, 0.0]) + 0.3 * rng.normal(
        size=(2 * n_per_class, 2)
    )
    return features, labels


def test_separable_clusters_score_perfectly() -> None:
    # every held-out sample is on its class's side of a wide margin
    features, labels = _two_clusters(10, seed=0)
    assert probe_cv_accuracy(features, labels) == 1.0


def test_a_stray_sample_costs_exactly_one_prediction() -> None:
    # one class-0 sample sits inside class 1: it is misclassified when held out, nothing else is
    features, labels = _two_clusters(10, seed=1)
    features[0] = [5.0, 0.1]
    predicted = probe_cv_predictions(features, labels)
    assert predicted[0] == 1 and (predicted[1:] == labels[1:]).all()
    assert probe_cv_accuracy(features, labels) == pytest.approx(19 / 20)


def test_random_labels_score_near_chance() -> None:
    # no signal: out-of-fold accuracy stays near 1/2 (a probe that memorised would not show here)
    rng = np.random.default_rng(2)
    features, labels = rng.normal(size=(200, 10)), rng.integers(0, 2, size=200)
    assert 0.35 < probe_cv_accuracy(features, labels) < 0.65


def test_row_span_solve_gives_the_full_space_predictions() -> None:
    # d > n: solving in the span of the training rows predicts exactly what the full-space probe does
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(3), 12)
    features = rng.normal(size=(36, 300)) + 0.8 * np.eye(3)[labels] @ rng.normal(size=(3, 300))
    expected = np.empty_like(labels)
    for fit, held in StratifiedKFold(n_splits=5, shuffle=True, random_state=0).split(features, labels):
        scaler = StandardScaler().fit(features[fit])
        model = LogisticRegression(C=1.0, max_iter=5000, tol=1e-10).fit(
            scaler.transform(features[fit]), labels[fit]
        )
        expected[held] = model.predict(scaler.transform(features[held]))
    assert (probe_cv_predictions(features, labels, folds=5, seed=0) == expected).all()


def test_folds_follow_the_smallest_class() -> None:
    # stratification needs a sample of every class per fold
    assert cv_folds(np.array([0, 0, 0, 1, 1, 1, 1, 1, 1]), max_folds=5) == 3
    assert cv_folds(np.repeat([0, 1], 20), max_folds=5) == 5
    with pytest.raises(ValueError, match="at least 2 samples"):
        probe_cv_accuracy(np.ones((3, 2)), np.array([0, 0, 1]))
