"""LogME (You et al., ICML 2021): the log marginal likelihood of a Bayesian linear model on frozen features.

For each class ``k`` the one-hot column ``y_k`` is regressed on the features ``F`` (``n x d``) with the
prior ``w ~ N(0, alpha^-1 I)`` and the noise ``y | w ~ N(F w, beta^-1 I)``. The evidence

    log p(y | F, alpha, beta) = d/2 log alpha + n/2 log beta - n/2 log 2 pi
                                - beta/2 ||y - F m||^2 - alpha/2 ||m||^2 - 1/2 log det(alpha I + beta F^T F)

is maximised over ``alpha, beta`` by MacKay's fixed point (the same iteration as scikit-learn's
``BayesianRidge``), and LogME is the mean over classes of the maximised evidence divided by ``n``.
Everything runs on one SVD of ``F`` shared by all classes, in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Evidence:
    """The maximised evidence of one target column and where the fixed point ended."""

    log_evidence: float  # log p(y | F, alpha, beta), not divided by n
    alpha: float  # prior precision of the weights (scikit-learn's ``lambda_``)
    beta: float  # noise precision (scikit-learn's ``alpha_``)
    iterations: int
    converged: bool


@dataclass(frozen=True)
class _Spectrum:
    """``F = U diag(s) V^T`` (thin SVD), what every class's fixed point needs."""

    u: FloatArray  # n x K
    sigma: FloatArray  # K squared singular values (eigenvalues of F^T F)
    n: int
    d: int


def _spectrum(features: FloatArray) -> _Spectrum:
    u, s, _ = np.linalg.svd(features, full_matrices=False)
    return _Spectrum(u=u, sigma=s**2, n=features.shape[0], d=features.shape[1])


def _log_evidence(spec: _Spectrum, z: FloatArray, outside: float, alpha: float, beta: float) -> float:
    """The evidence at ``(alpha, beta)`` from ``z = U^T y`` and ``outside = ||y - U U^T y||^2``."""
    shrink = alpha / (alpha + beta * spec.sigma)
    residual = outside + float(np.sum((z * shrink) ** 2))  # ||y - F m||^2
    weights = float(np.sum(spec.sigma * (beta * z / (alpha + beta * spec.sigma)) ** 2))  # ||m||^2
    # det(alpha I + beta F^T F) over all d directions: d - K of them carry no data (eigenvalue 0)
    log_det = float(np.sum(np.log(alpha + beta * spec.sigma))) + (spec.d - spec.sigma.size) * math.log(alpha)
    return 0.5 * (
        spec.d * math.log(alpha)
        + spec.n * math.log(beta)
        - spec.n * math.log(2 * math.pi)
        - beta * residual
        - alpha * weights
        - log_det
    )


def _maximise(spec: _Spectrum, y: FloatArray, *, max_iter: int, tol: float) -> Evidence:
    """MacKay's fixed point; stops when (alpha, beta) or the evidence itself stop changing.

    With more dimensions than samples a target can be fitted exactly, and the noise precision then
    grows without bound while the evidence rises to a finite supremum: the evidence criterion ends
    that case, at the supremum to within ``tol``.
    """
    z = spec.u.T @ y
    outside = max(float(y @ y) - float(z @ z), 0.0)
    alpha, beta = 1.0, 1.0 / (float(np.var(y)) + float(np.finfo(np.float64).eps))
    previous = _log_evidence(spec, z, outside, alpha, beta)
    for iteration in range(1, max_iter + 1):
        gamma = float(np.sum(beta * spec.sigma / (alpha + beta * spec.sigma)))  # effective parameters
        weights = float(np.sum(spec.sigma * (beta * z / (alpha + beta * spec.sigma)) ** 2))  # ||m||^2
        residual = outside + float(np.sum((z * alpha / (alpha + beta * spec.sigma)) ** 2))
        new_alpha = gamma / max(weights, 1e-300)
        new_beta = (spec.n - gamma) / max(residual, 1e-300)
        still = abs(new_alpha - alpha) <= tol * alpha and abs(new_beta - beta) <= tol * beta
        alpha, beta = new_alpha, new_beta
        current = _log_evidence(spec, z, outside, alpha, beta)
        if still or abs(current - previous) <= tol * max(1.0, abs(current)):
            return Evidence(current, alpha, beta, iteration, True)
        previous = current
    return Evidence(previous, alpha, beta, max_iter, False)


def evidence(
    features: FloatArray, target: FloatArray, *, max_iter: int = 1000, tol: float = 1e-10
) -> Evidence:
    """Maximised evidence of the Bayesian linear regression of ``target`` (``n``) on ``features`` (``n x d``).

    No intercept and no centring: the model is exactly ``y = F w + noise`` (LogME's, and
    ``BayesianRidge(fit_intercept=False)`` with flat Gamma priors).
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if f.ndim != 2 or y.shape != (f.shape[0],):
        raise ValueError(f"features must be n x d and target n; got {f.shape=} {y.shape=}")
    return _maximise(_spectrum(f), y, max_iter=max_iter, tol=tol)


def logme(
    features: FloatArray, labels: NDArray[np.int64], *, max_iter: int = 1000, tol: float = 1e-10
) -> float:
    """LogME of ``features`` (``n x d``) for integer ``labels``: mean over classes of evidence / n.

    Higher is better. Values are comparable between backbones on the same samples (the score is
    per sample), not across datasets.
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if f.ndim != 2 or y.shape != (f.shape[0],):
        raise ValueError(f"features must be n x d and labels n; got {f.shape=} {y.shape=}")
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError(f"LogME needs at least 2 classes, got {classes.size}")
    spec = _spectrum(f)
    scores = [
        _maximise(spec, (y == c).astype(np.float64), max_iter=max_iter, tol=tol).log_evidence / spec.n
        for c in classes
    ]
    return float(np.mean(scores))
