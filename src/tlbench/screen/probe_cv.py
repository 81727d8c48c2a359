"""Cross-validated linear-probe accuracy on frozen features (scikit-learn's logistic regression).

Stratified k-fold on the training pool only (the validation and test splits stay untouched): each
fold standardises the features on its training part, fits an L2-regularised multinomial logistic
regression and scores the held-out part. The score is the accuracy over all held-out predictions
(every sample predicted exactly once), so it is exact on small sets rather than a mean of fold means.

With fewer samples than feature dimensions (the usual few-shot case: ~200 images, 1,280 features),
each fold is solved in the span of its training rows: an L2-penalised linear model's optimal weights
lie in that span (the representer theorem), so projecting onto an orthonormal basis of it gives the
same logits, hence the same predictions, at a fraction of the cost.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def cv_folds(labels: IntArray, *, max_folds: int = 5) -> int:
    """Folds that stratification allows: at most ``max_folds``, at most the smallest class count."""
    if max_folds < 2:
        raise ValueError(f"max_folds must be >= 2, got {max_folds=}")
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    if counts.size < 2:
        raise ValueError(f"a probe needs at least 2 classes, got {counts.size}")
    return int(min(max_folds, counts.min()))


def _row_span(x: FloatArray) -> FloatArray:
    """Orthonormal basis (rows) of the span of ``x``'s rows, dropping numerically null directions."""
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    keep = s > s.max(initial=0.0) * max(x.shape) * np.finfo(np.float64).eps
    return np.asarray(vt[keep], dtype=np.float64)


def probe_cv_predictions(
    features: FloatArray, labels: IntArray, *, folds: int = 5, c: float = 1.0, seed: int = 0
) -> IntArray:
    """Out-of-fold predictions: each sample predicted by a probe fitted without it."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"features must be n x d and labels n; got {x.shape=} {y.shape=}")
    n_splits = cv_folds(y, max_folds=folds)
    if n_splits < 2:
        raise ValueError("probe cross-validation needs at least 2 samples of every class")
    predicted = np.empty_like(y)
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for fit_idx, held_idx in splitter.split(x, y):
        scaler = StandardScaler().fit(x[fit_idx])
        fit_x, held_x = scaler.transform(x[fit_idx]), scaler.transform(x[held_idx])
        if fit_x.shape[1] > fit_x.shape[0]:
            basis = _row_span(fit_x)
            fit_x, held_x = fit_x @ basis.T, held_x @ basis.T
        probe = LogisticRegression(C=c, max_iter=2000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # the accuracy is what is scored
            probe.fit(fit_x, y[fit_idx])
        predicted[held_idx] = probe.predict(held_x)
    return predicted


def probe_cv_accuracy(
    features: FloatArray, labels: IntArray, *, folds: int = 5, c: float = 1.0, seed: int = 0
) -> float:
    """Accuracy of the out-of-fold predictions of :func:`probe_cv_predictions`."""
    predicted = probe_cv_predictions(features, labels, folds=folds, c=c, seed=seed)
    return float(np.mean(predicted == np.asarray(labels)))
