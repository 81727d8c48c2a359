"""k-nearest-neighbour accuracy on frozen features (cosine similarity, majority vote).

Features are L2-normalised, so the nearest neighbours are those with the largest cosine similarity,
the usual choice for kNN evaluation of pretrained representations. A vote tie is broken by the
summed similarity of the tied classes, then by the lower class index, so the result is deterministic.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def _normalise(features: FloatArray) -> FloatArray:
    f = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    return f / np.maximum(norms, 1e-12)


def _vote(similarity: FloatArray, labels: IntArray, k: int, num_classes: int) -> IntArray:
    """Predicted class per row of ``similarity`` (queries x references) from the ``k`` most similar."""
    # stable sort on -similarity: equal similarities keep reference order (deterministic)
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    votes = np.zeros((similarity.shape[0], num_classes))
    weight = np.zeros((similarity.shape[0], num_classes))
    rows = np.arange(similarity.shape[0])[:, None]
    np.add.at(votes, (rows, labels[nearest]), 1.0)
    np.add.at(weight, (rows, labels[nearest]), np.take_along_axis(similarity, nearest, axis=1))
    # lexicographic: votes first, summed similarity second (weights are < k + 1 apart from votes)
    score = votes * (2.0 * k + 2.0) + weight
    return np.asarray(np.argmax(score, axis=1), dtype=np.int64)


def _check(features: FloatArray, labels: IntArray, k: int, *, minimum: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k=}")
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(f"features must be n x d and labels n; got {features.shape=} {labels.shape=}")
    if features.shape[0] < minimum:
        raise ValueError(f"kNN needs at least {minimum} reference samples, got {features.shape[0]}")


def knn_predict(
    train_features: FloatArray, train_labels: IntArray, query_features: FloatArray, *, k: int = 5
) -> IntArray:
    """Labels of ``query_features`` by the ``k`` nearest training samples (``k`` capped at the train size)."""
    train_labels = np.asarray(train_labels, dtype=np.int64)
    _check(np.asarray(train_features), train_labels, k, minimum=1)
    k = min(k, train_labels.size)
    similarity = _normalise(query_features) @ _normalise(train_features).T
    return _vote(similarity, train_labels, k, int(train_labels.max()) + 1)


def knn_accuracy(
    train_features: FloatArray,
    train_labels: IntArray,
    query_features: FloatArray,
    query_labels: IntArray,
    *,
    k: int = 5,
) -> float:
    """Accuracy on the query set of the kNN classifier over the training set."""
    predicted = knn_predict(train_features, train_labels, query_features, k=k)
    return float(np.mean(predicted == np.asarray(query_labels)))


def knn_loo_accuracy(features: FloatArray, labels: IntArray, *, k: int = 5) -> float:
    """Leave-one-out accuracy: each sample classified by its ``k`` nearest *other* samples."""
    labels = np.asarray(labels, dtype=np.int64)
    _check(np.asarray(features), labels, k, minimum=2)
    k = min(k, labels.size - 1)
    normalised = _normalise(features)
    similarity = normalised @ normalised.T
    np.fill_diagonal(similarity, -np.inf)  # a sample is never its own neighbour
    predicted = _vote(similarity, labels, k, int(labels.max()) + 1)
    return float(np.mean(predicted == labels))
