"""Accuracy and F1 on hand-computed examples, and against scikit-learn where it is installed."""

import numpy as np
import pytest

from attention_jax.evaluation import classification

LABELS = np.array([1, 0, 1, 1, 0, 1])
PREDICTIONS = np.array([1, 1, 1, 0, 0, 1])


def test_binary_by_hand():
    # Positive class: TP 3 (rows 0, 2, 5), FP 1 (row 1), FN 1 (row 3) → F1 = 6 / 8.
    assert classification.accuracy(LABELS, PREDICTIONS) == 4 / 6
    assert classification.f1_score(LABELS, PREDICTIONS) == 0.75
    # Class 0 as positive: TP 1 (row 4), FP 1 (row 3), FN 1 (row 1) → 2 / 4.
    assert classification.f1_score(LABELS, PREDICTIONS, positive_label=0) == 0.5


def test_macro_by_hand():
    assert classification.f1_score(LABELS, PREDICTIONS, average="macro") == (0.75 + 0.5) / 2
    labels, predictions = np.array([0, 1, 2, 2, 2]), np.array([0, 2, 2, 2, 1])
    # class 0: 2/2 = 1; class 1: TP 0 → 0; class 2: TP 2, FP 1, FN 1 → 4/6.
    expected = (1 + 0 + 4 / 6) / 3
    assert classification.f1_score(labels, predictions, average="macro") == pytest.approx(expected)
    # An explicit class list can include a class nobody predicted or labelled (scores 0).
    assert classification.f1_score(
        labels, predictions, average="macro", classes=[0, 1, 2, 3]
    ) == pytest.approx((1 + 0 + 4 / 6 + 0) / 4)
    assert classification.f1_score(np.array([0, 0]), np.array([0, 0])) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scikit_learn(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    labels, predictions = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    assert classification.accuracy(labels, predictions) == pytest.approx(
        metrics.accuracy_score(labels, predictions)
    )
    assert classification.f1_score(labels, predictions, average="macro") == pytest.approx(
        metrics.f1_score(labels, predictions, average="macro", zero_division=0)
    )
    binary_labels, binary_predictions = labels % 2, predictions % 2
    assert classification.f1_score(binary_labels, binary_predictions) == pytest.approx(
        metrics.f1_score(binary_labels, binary_predictions)
    )


def test_errors():
    with pytest.raises(ValueError, match="must be one 1-D shape"):
        classification.accuracy(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="no examples"):
        classification.f1_score(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="average must be 'binary' or 'macro'"):
        classification.f1_score(LABELS, PREDICTIONS, average="micro")
