"""The zero-training scores of one backbone's frozen features, each with the seconds it took.

Only the train pool and the validation split are read: LogME, kNN leave-one-out and the
cross-validated probe use the train pool alone; ``knn_acc`` classifies validation from the train pool.

The arithmetic runs with one BLAS/OpenMP thread: the matrices are small (a few hundred samples), and
NumPy's and SciPy's thread pools next to torch's oversubscribe a busy CPU; measured on 196 x 1,280
features on 2 shared cores, LogME took 3.9 s and the 5-fold probe 15 s with the default pools, and
0.07 s and 0.23 s with one thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tlbench.screen.features import ScreenFeatures
from tlbench.screen.knn import knn_accuracy, knn_loo_accuracy
from tlbench.screen.logme import logme
from tlbench.screen.probe_cv import cv_folds, probe_cv_accuracy


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


def feature_scores(features: ScreenFeatures, settings: ScoreSettings) -> dict[str, Timed]:
    """``logme``, ``knn_loo_acc``, ``knn_acc`` and ``probe_cv_acc`` of ``features``."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _scores(features, settings)


def _scores(features: ScreenFeatures, settings: ScoreSettings) -> dict[str, Timed]:
    f, y = features.train, features.train_labels
    return {
        "logme": _timed(lambda: logme(f, y)),
        "knn_loo_acc": _timed(lambda: knn_loo_accuracy(f, y, k=settings.knn_k)),
        "knn_acc": _timed(lambda: knn_accuracy(f, y, features.val, features.val_labels, k=settings.knn_k)),
        "probe_cv_acc": _timed(
            lambda: probe_cv_accuracy(
                f, y, folds=settings.probe_folds, c=settings.probe_c, seed=settings.seed
            )
        ),
    }


def effective_folds(labels: np.ndarray, settings: ScoreSettings) -> int:
    """The folds the probe actually used (fewer than asked when a class is small)."""
    try:
        return cv_folds(labels, max_folds=settings.probe_folds)
    except ValueError:
        return 0
