"""Zero-training scores of one backbone's frozen features (numpy / scikit-learn), each timed: LogME, kNN
accuracy (leave-one-out on the train pool, and on validation), cross-validated linear-probe accuracy."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.extmath import weighted_mode

# --- LogME (You et al., ICML 2021) --------------------------------------------------------------------------

# For each class ``k`` the one-hot column ``y_k`` is regressed on the features ``F`` (``n x d``) with the
# prior ``w ~ N(0, alpha^-1 I)`` and the noise ``y | w ~ N(F w, beta^-1 I)``. The evidence
#
#     log p(y | F, alpha, beta) = d/2 log alpha + n/2 log beta - n/2 log 2 pi
#                                 - beta/2 ||y - F m||^2 - alpha/2 ||m||^2 - 1/2 log det(alpha I + beta F^T F)
#
# is maximised over ``alpha, beta`` by MacKay's fixed point (the same iteration as scikit-learn's
# ``BayesianRidge``), and LogME is the mean over classes of the maximised evidence divided by ``n``.
# Everything runs on one SVD of ``F`` shared by all classes, in float64.

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def _checked(features: FloatArray, labels: IntArray) -> tuple[FloatArray, IntArray]:
    """``features`` as float64 ``n x d`` and ``labels`` as int64 ``n``, or a ValueError."""
    x, y = np.asarray(features, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"features must be n x d and labels n; got {x.shape=} {y.shape=}")
    return x, y


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


def _maximise(
    spec: _Spectrum, y: FloatArray, *, max_iter: int = 1000, tol: float = 1e-10
) -> tuple[float, float, float, bool]:
    """MacKay's fixed point -> (log evidence, alpha, beta, converged); stops when (alpha, beta) or the
    evidence stop changing. With d > n a target is fitted exactly: beta grows without bound while the
    evidence rises to a finite supremum, which the evidence criterion reaches to within ``tol``."""
    z = spec.u.T @ y
    outside = max(float(y @ y) - float(z @ z), 0.0)
    alpha, beta = 1.0, 1.0 / (float(np.var(y)) + float(np.finfo(np.float64).eps))
    previous = _log_evidence(spec, z, outside, alpha, beta)
    for _ in range(max_iter):
        gamma = float(np.sum(beta * spec.sigma / (alpha + beta * spec.sigma)))  # effective parameters
        weights = float(np.sum(spec.sigma * (beta * z / (alpha + beta * spec.sigma)) ** 2))  # ||m||^2
        residual = outside + float(np.sum((z * alpha / (alpha + beta * spec.sigma)) ** 2))
        new_alpha = gamma / max(weights, 1e-300)
        new_beta = (spec.n - gamma) / max(residual, 1e-300)
        still = abs(new_alpha - alpha) <= tol * alpha and abs(new_beta - beta) <= tol * beta
        alpha, beta = new_alpha, new_beta
        current = _log_evidence(spec, z, outside, alpha, beta)
        if still or abs(current - previous) <= tol * max(1.0, abs(current)):
            return current, alpha, beta, True
        previous = current
    return previous, alpha, beta, False


def logme(features: FloatArray, labels: IntArray) -> float:
    """LogME of ``features`` (``n x d``) for integer ``labels``: mean over classes of evidence / n. Higher
    is better; comparable between backbones on the same samples, not across datasets."""
    f, y = _checked(features, labels)
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError(f"LogME needs at least 2 classes, got {classes.size}")
    spec = _spectrum(f)
    return float(np.mean([_maximise(spec, (y == c).astype(np.float64))[0] / spec.n for c in classes]))


# --- k-nearest-neighbour accuracy ---------------------------------------------------------------------------

# Cosine distance, the usual choice for kNN evaluation of pretrained representations. Each neighbour's
# vote weighs ``1 + similarity / (2k + 2)``: k neighbours' weights add up to less than one vote, so the
# majority decides and a tie goes to the more similar class (then the lower class index).


def _weights(distance: FloatArray, *, k: int) -> FloatArray:
    return np.asarray(1.0 + (1.0 - distance) / (2.0 * k + 2.0))


def _fitted_knn(features: FloatArray, labels: IntArray, k: int, *, left_out: int) -> KNeighborsClassifier:
    """The cosine kNN classifier on ``features``, ``k`` capped at the samples a query can see."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k=}")
    features, labels = _checked(features, labels)
    if labels.size <= left_out:
        raise ValueError(f"kNN needs at least {left_out + 1} reference samples, got {labels.size}")
    k = min(k, labels.size - left_out)
    knn = KNeighborsClassifier(
        n_neighbors=k, metric="cosine", algorithm="brute", weights=partial(_weights, k=k)
    )
    return knn.fit(features, labels)


def knn_accuracy(
    train_features: FloatArray,
    train_labels: IntArray,
    query_features: FloatArray,
    query_labels: IntArray,
    *,
    k: int = 5,
) -> float:
    """Accuracy on the query set of the kNN classifier over the training set."""
    knn = _fitted_knn(train_features, train_labels, k, left_out=0)
    return float(accuracy_score(np.asarray(query_labels), knn.predict(query_features)))


def knn_loo_accuracy(features: FloatArray, labels: IntArray, *, k: int = 5) -> float:
    """Leave-one-out accuracy: each sample classified by its ``k`` nearest *other* samples.

    ``kneighbors()`` without a query leaves each sample out of its own neighbours, which is exactly
    leave-one-out; ``cross_val_predict(LeaveOneOut())`` refits once per sample instead (11.5 s against
    0.05 s for 500 x 1,280 features, measured), so the vote over those neighbours is scikit-learn's own.
    """
    knn = _fitted_knn(features, labels, k, left_out=1)
    labels = np.asarray(labels, dtype=np.int64)
    distance, nearest = knn.kneighbors()
    predicted, _ = weighted_mode(labels[nearest], _weights(distance, k=knn.n_neighbors), axis=1)
    return float(accuracy_score(labels, predicted.ravel().astype(np.int64)))


# --- cross-validated linear-probe accuracy ------------------------------------------------------------------

# Stratified k-fold on the train pool only, by ``cross_val_predict`` over a pipeline: each fold
# standardises on its training part, fits an L2 multinomial logistic regression and predicts the
# held-out part; the score is the accuracy over all held-out predictions (exact on small sets, rather
# than a mean of fold means).


def cv_folds(labels: IntArray, *, max_folds: int = 5) -> int:
    """Folds stratification allows: at most ``max_folds`` and the smallest class count; 0 for one class."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return int(min(max_folds, counts.min())) if counts.size >= 2 else 0


class RowSpan(TransformerMixin, BaseEstimator):
    """Projects onto an orthonormal basis of the span of the rows it was fitted on (dropping numerically
    null directions): an L2-penalised linear model's optimum lies in that span (representer theorem), so
    the logits, hence the predictions, are those of the full space, at a fraction of the cost when there
    are more features than rows (~200 images, 1,280 features). Otherwise it passes the data through."""

    def fit(self, x: FloatArray, y: object = None) -> RowSpan:
        if x.shape[1] > x.shape[0]:
            _, s, vt = np.linalg.svd(x, full_matrices=False)
            keep = s > s.max(initial=0.0) * max(x.shape) * np.finfo(np.float64).eps
            self.basis_: FloatArray | None = np.asarray(vt[keep], dtype=np.float64)
        else:
            self.basis_ = None
        return self

    def transform(self, x: FloatArray) -> FloatArray:
        return x if self.basis_ is None else np.asarray(x @ self.basis_.T)


def probe_cv_predictions(
    features: FloatArray, labels: IntArray, *, folds: int = 5, c: float = 1.0, seed: int = 0
) -> IntArray:
    """Out-of-fold predictions: each sample predicted by a probe fitted without it."""
    x, y = _checked(features, labels)
    n_splits = cv_folds(y, max_folds=folds)
    if n_splits < 2:
        raise ValueError("probe cross-validation needs at least 2 samples of every class")
    probe = make_pipeline(StandardScaler(), RowSpan(), LogisticRegression(C=c, max_iter=2000))
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the accuracy is what is scored
        return np.asarray(cross_val_predict(probe, x, y, cv=splitter), dtype=np.int64)


def probe_cv_accuracy(
    features: FloatArray, labels: IntArray, *, folds: int = 5, c: float = 1.0, seed: int = 0
) -> float:
    """Accuracy of the out-of-fold predictions of :func:`probe_cv_predictions`."""
    predicted = probe_cv_predictions(features, labels, folds=folds, c=c, seed=seed)
    return float(accuracy_score(np.asarray(labels), predicted))


# --- every score of one backbone, timed ---------------------------------------------------------------------

# One BLAS/OpenMP thread: the matrices are small, and NumPy's and SciPy's pools next to torch's
# oversubscribe a busy CPU (196 x 1,280 features, 2 shared cores: LogME 3.9 s and the 5-fold probe
# 15 s with the default pools, 0.07 s and 0.23 s with one thread; measured).


@dataclass(frozen=True)
class ScoreSettings:
    """How the scores are computed (logged as params, so two screens are comparable)."""

    knn_k: int = 5
    probe_folds: int = 5
    probe_c: float = 1.0  # inverse L2 strength of the standardised logistic regression
    seed: int = 0  # fold assignment of the probe's cross-validation

    def __post_init__(self) -> None:
        if self.knn_k < 1:
            raise ValueError(f"knn_k must be >= 1, got {self.knn_k=}")
        if self.probe_folds < 2:
            raise ValueError(f"probe_folds must be >= 2, got {self.probe_folds=}")
        if self.probe_c <= 0:
            raise ValueError(f"probe_c must be > 0, got {self.probe_c=}")


@dataclass(frozen=True)
class Timed:
    value: float  # NaN when the score could not be computed (``note`` says why)
    seconds: float
    note: str = ""


def _timed(score: Callable[[], float]) -> Timed:
    start = time.perf_counter()
    try:
        value = score()
    except ValueError as exc:  # too few samples for a fold or a neighbour: the score is absent, not fatal
        return Timed(float("nan"), time.perf_counter() - start, str(exc))
    return Timed(value, time.perf_counter() - start)


def feature_scores(
    train: FloatArray, train_labels: IntArray, val: FloatArray, val_labels: IntArray, settings: ScoreSettings
) -> dict[str, Timed]:
    """``logme``, ``knn_loo_acc``, ``knn_acc`` and ``probe_cv_acc`` of one backbone's frozen features."""
    from threadpoolctl import threadpool_limits

    k, folds, c, seed = settings.knn_k, settings.probe_folds, settings.probe_c, settings.seed
    with threadpool_limits(limits=1):
        return {
            "logme": _timed(lambda: logme(train, train_labels)),
            "knn_loo_acc": _timed(lambda: knn_loo_accuracy(train, train_labels, k=k)),
            "knn_acc": _timed(lambda: knn_accuracy(train, train_labels, val, val_labels, k=k)),
            "probe_cv_acc": _timed(
                lambda: probe_cv_accuracy(train, train_labels, folds=folds, c=c, seed=seed)
            ),
        }
