"""The screen's scores on known answers: LogME against scikit-learn's BayesianRidge, kNN on points of a
circle, the cross-validated probe on clusters."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import BayesianRidge, LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from tlbench.screen.scores import (
    _log_evidence,
    _maximise,
    _spectrum,
    cv_folds,
    knn_accuracy,
    knn_loo_accuracy,
    logme,
    probe_cv_accuracy,
    probe_cv_predictions,
)

# --- LogME --------------------------------------------------------------------------------------------------


def _bayesian_ridge(features: np.ndarray, target: np.ndarray) -> BayesianRidge:
    # flat Gamma priors and no intercept: exactly LogME's model, fitted to convergence
    return BayesianRidge(
        fit_intercept=False,
        compute_score=True,
        alpha_1=0.0,
        alpha_2=0.0,
        lambda_1=0.0,
        lambda_2=0.0,
        tol=1e-12,
        max_iter=100_000,
    ).fit(features, target)


def _regression(n: int, d: int, *, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, d))
    target = features @ rng.normal(size=d) * 0.3 + noise * rng.normal(size=n)
    return features, target


@pytest.mark.parametrize(("n", "d", "noise", "seed"), [(120, 20, 0.5, 0), (200, 50, 1.0, 1)])
def test_evidence_matches_bayesian_ridge(n: int, d: int, noise: float, seed: int) -> None:
    # both maximise the same marginal likelihood: same optimum (alpha, beta) and the same evidence
    features, target = _regression(n, d, noise=noise, seed=seed)
    log_evidence, alpha, beta, converged = _maximise(_spectrum(features), target)
    reference = _bayesian_ridge(features, target)
    assert converged
    assert log_evidence == pytest.approx(float(reference.scores_[-1]), rel=1e-9)
    assert alpha == pytest.approx(float(reference.lambda_), rel=1e-5)  # weight precision
    assert beta == pytest.approx(float(reference.alpha_), rel=1e-5)  # noise precision


def test_evidence_with_more_dimensions_than_samples_matches_bayesian_ridge() -> None:
    # d > n (the few-shot shape): the target is fitted exactly, the noise precision runs off to
    # infinity in both, and both end at the same supremum of the evidence
    features, target = _regression(60, 150, noise=0.3, seed=2)
    log_evidence, alpha, beta, converged = _maximise(_spectrum(features), target)
    reference = _bayesian_ridge(features, target)
    assert converged and beta > 1e5 and float(reference.alpha_) > 1e5
    assert log_evidence == pytest.approx(float(reference.scores_[-1]), rel=1e-8)
    assert alpha == pytest.approx(float(reference.lambda_), rel=1e-5)


@pytest.mark.parametrize(("n", "d"), [(120, 20), (60, 150)])
@pytest.mark.parametrize(("alpha", "beta"), [(3.0, 2.0), (0.1, 40.0)])
def test_evidence_formula_agrees_at_the_same_precisions(n: int, d: int, alpha: float, beta: float) -> None:
    # the closed form (one SVD, padded log-determinant when d > n) equals scikit-learn's first score,
    # which it computes at its initial precisions before any update
    features, target = _regression(n, d, noise=0.5, seed=5)
    reference = BayesianRidge(
        fit_intercept=False, compute_score=True, alpha_1=0.0, alpha_2=0.0, lambda_1=0.0, lambda_2=0.0,
        alpha_init=beta, lambda_init=alpha, max_iter=1,
    ).fit(features, target)  # fmt: skip
    spec = _spectrum(features)
    z = spec.u.T @ target
    ours = _log_evidence(spec, z, max(float(target @ target) - float(z @ z), 0.0), alpha, beta)
    assert ours == pytest.approx(float(reference.scores_[0]), rel=1e-10)


def test_logme_is_the_mean_per_sample_evidence_of_one_hot_columns() -> None:
    # LogME = mean over classes of BayesianRidge's evidence on the class indicator, divided by n
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(3), 40)
    features = rng.normal(size=(120, 16)) + np.eye(3)[labels] @ rng.normal(size=(3, 16))
    expected = np.mean(
        [_bayesian_ridge(features, (labels == c).astype(float)).scores_[-1] / 120 for c in range(3)]
    )
    assert logme(features, labels) == pytest.approx(float(expected), rel=1e-6)


def test_separable_representation_outscores_shuffled_one() -> None:
    # class-aligned features must score higher than the same features with rows shuffled vs labels
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(4), 30)
    centres = rng.normal(size=(4, 32)) * 3.0
    separable = centres[labels] + rng.normal(size=(120, 32))
    shuffled = separable[rng.permutation(120)]
    good, bad = logme(separable, labels), logme(shuffled, labels)
    assert good > bad + 0.1
    assert logme(separable, labels) == logme(separable.copy(), labels)  # deterministic


def test_logme_rejects_bad_shapes_and_single_class() -> None:
    # misuse is a ValueError naming the problem
    with pytest.raises(ValueError, match="2 classes"):
        logme(np.ones((4, 2)), np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="n x d"):
        logme(np.ones((4, 2)), np.zeros(3, dtype=np.int64))


# --- kNN ----------------------------------------------------------------------------------------------------


def _on_circle(degrees: list[float], scale: float = 1.0) -> np.ndarray:
    radians = np.deg2rad(np.asarray(degrees))
    return scale * np.stack([np.cos(radians), np.sin(radians)], axis=1)


# class 0 near 0-20 degrees, class 1 near 90-110 degrees, and one class-0 sample at 95 degrees
ANGLES = [0.0, 10.0, 20.0, 90.0, 100.0, 110.0, 95.0]
LABELS = np.array([0, 0, 0, 1, 1, 1, 0])


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (1, 4 / 7),  # 90 and 100 see the stray 95; 95 sees class 1; the other four are right
        (3, 6 / 7),  # three neighbours outvote the stray for everyone but the stray itself
    ],
)
def test_leave_one_out_known_answer(k: int, expected: float) -> None:
    # worked out by hand from the angles above (cosine similarity = angular distance here)
    assert knn_loo_accuracy(_on_circle(ANGLES), LABELS, k=k) == pytest.approx(expected)


def test_validation_accuracy_known_answer() -> None:
    # 5 -> class 0, 105 -> class 1 (right); 93 (class 1) is nearest to the class-0 stray at 95 (wrong)
    queries, truth = _on_circle([5.0, 105.0, 93.0]), np.array([0, 1, 1])
    assert knn_accuracy(_on_circle(ANGLES), LABELS, queries, truth, k=1) == pytest.approx(2 / 3)


def test_cosine_similarity_ignores_feature_norms() -> None:
    # scaling samples changes no neighbour: the same predictions as unscaled
    scaled = _on_circle(ANGLES) * np.array([[1.0], [7.0], [0.2], [3.0], [1.0], [50.0], [2.0]])
    assert knn_loo_accuracy(scaled, LABELS, k=3) == pytest.approx(6 / 7)


def test_vote_ties_go_to_the_more_similar_class() -> None:
    # k=2 with one neighbour of each class: the class of the closer neighbour wins
    train, labels = _on_circle([0.0, 60.0]), np.array([0, 1])
    assert knn_accuracy(train, labels, _on_circle([40.0, 20.0]), np.array([1, 0]), k=2) == 1.0


def test_k_is_capped_and_validated() -> None:
    # k larger than the reference set uses all 6 others: class-0 samples tie 3-3 (the closer class,
    # their own, wins, except for the stray), class-1 samples are outvoted 4-2 -> 3/7; k < 1 and a
    # lone sample are errors
    assert knn_loo_accuracy(_on_circle(ANGLES), LABELS, k=50) == pytest.approx(3 / 7)
    with pytest.raises(ValueError, match="k must be"):
        knn_loo_accuracy(_on_circle(ANGLES), LABELS, k=0)
    with pytest.raises(ValueError, match="at least 2"):
        knn_loo_accuracy(_on_circle([0.0]), np.array([0]), k=1)


# --- cross-validated probe ----------------------------------------------------------------------------------


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
