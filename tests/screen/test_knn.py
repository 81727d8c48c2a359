from __future__ import annotations

import numpy as np
import pytest

from tlbench.screen.knn import knn_accuracy, knn_loo_accuracy, knn_predict


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
    assert knn_predict(train, labels, _on_circle([40.0, 20.0]), k=2).tolist() == [1, 0]


def test_k_is_capped_and_validated() -> None:
    # k larger than the reference set uses all 6 others: class-0 samples tie 3-3 (the closer class,
    # their own, wins, except for the stray), class-1 samples are outvoted 4-2 -> 3/7; k < 1 and a
    # lone sample are errors
    assert knn_loo_accuracy(_on_circle(ANGLES), LABELS, k=50) == pytest.approx(3 / 7)
    with pytest.raises(ValueError, match="k must be"):
        knn_loo_accuracy(_on_circle(ANGLES), LABELS, k=0)
    with pytest.raises(ValueError, match="at least 2"):
        knn_loo_accuracy(_on_circle([0.0]), np.array([0]), k=1)
