"""Cross-validated linear-probe accuracy on frozen features (scikit-learn's logistic regression).

Stratified k-fold on the training pool only (the validation and test splits stay untouched), by
``cross_val_predict`` over a pipeline: each fold standardises the features on its training part, fits
an L2-regularised multinomial logistic regression and predicts the held-out part. The score is the
accuracy over all held-out predictions (every sample predicted exactly once), so it is exact on small
sets rather than a mean of fold means.

With fewer samples than feature dimensions (the usual few-shot case: ~200 images, 1,280 features),
each fold is solved in the span of its training rows: an L2-penalised linear model's optimal weights
lie in that span (the representer theorem), so projecting onto an orthonormal basis of it gives the
same logits, hence the same predictions, at a fraction of the cost.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

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


class RowSpan(TransformerMixin, BaseEstimator):
    """Projects onto an orthonormal basis of the span of the rows it was fitted on (dropping numerically
    null directions): an L2-penalised linear model's optimum lies in that span, so the logits, hence the
    predictions, are those of the full space, at a fraction of the cost when there are more features
    than rows. With fewer features than rows it passes the data through."""

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
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"features must be n x d and labels n; got {x.shape=} {y.shape=}")
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
