from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import BayesianRidge

from tlbench.screen.logme import _log_evidence, _spectrum, evidence, logme


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
    ours = evidence(features, target)
    reference = _bayesian_ridge(features, target)
    assert ours.converged
    assert ours.log_evidence == pytest.approx(float(reference.scores_[-1]), rel=1e-9)
    assert ours.alpha == pytest.approx(float(reference.lambda_), rel=1e-5)  # weight precision
    assert ours.beta == pytest.approx(float(reference.alpha_), rel=1e-5)  # noise precision


def test_evidence_with_more_dimensions_than_samples_matches_bayesian_ridge() -> None:
    # d > n (the few-shot shape): the target is fitted exactly, the noise precision runs off to
    # infinity in both, and both end at the same supremum of the evidence
    features, target = _regression(60, 150, noise=0.3, seed=2)
    ours = evidence(features, target)
    reference = _bayesian_ridge(features, target)
    assert ours.converged and ours.beta > 1e5 and float(reference.alpha_) > 1e5
    assert ours.log_evidence == pytest.approx(float(reference.scores_[-1]), rel=1e-8)
    assert ours.alpha == pytest.approx(float(reference.lambda_), rel=1e-5)


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
