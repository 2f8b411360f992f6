"""Classification metrics: accuracy and F1 (binary or macro-averaged), in NumPy on the host.

E examples.
"""

from collections.abc import Sequence

import numpy as np


def _check(labels_E: np.ndarray, predictions_E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels_E, predictions_E = np.asarray(labels_E), np.asarray(predictions_E)
    if labels_E.ndim != 1 or labels_E.shape != predictions_E.shape:
        raise ValueError(
            f"labels {labels_E.shape} and predictions {predictions_E.shape} must be one 1-D shape"
        )
    if not len(labels_E):
        raise ValueError("no examples to score")
    return labels_E, predictions_E


def accuracy(labels_E: np.ndarray, predictions_E: np.ndarray) -> float:
    """Fraction of predictions equal to the label."""
    labels_E, predictions_E = _check(labels_E, predictions_E)
    return float(np.mean(labels_E == predictions_E))


def f1_score(
    labels_E: np.ndarray,
    predictions_E: np.ndarray,
    *,
    average: str = "binary",
    positive_label: int = 1,
    classes: Sequence[int] | None = None,
) -> float:
    """F1 = 2·TP / (2·TP + FP + FN), which is 0 for a class with no true positives.

    Args:
      average: "binary" scores `positive_label` only (GLUE's MRPC/QQP F1); "macro" is the
        unweighted mean over `classes` (default: every class seen in labels or predictions).
    """
    labels_E, predictions_E = _check(labels_E, predictions_E)
    if average == "binary":
        classes = [positive_label]
    elif average == "macro":
        classes = np.union1d(labels_E, predictions_E) if classes is None else classes
    else:
        raise ValueError(f"average must be 'binary' or 'macro', got {average!r}")
    scores = []
    for c in classes:
        true_positives = np.sum((predictions_E == c) & (labels_E == c))
        errors = np.sum(predictions_E == c) + np.sum(labels_E == c) - 2 * true_positives
        scores.append(2 * true_positives / (2 * true_positives + errors) if true_positives else 0.0)
    return float(np.mean(scores))
