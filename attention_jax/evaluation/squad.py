"""SQuAD v1.1 exact match and F1, with the official `evaluate-v1.1.py` definitions.

An answer is normalised by lower-casing, deleting ASCII punctuation, deleting the words a, an,
the, and collapsing whitespace (in that order). Exact match compares normalised strings; F1 is
the harmonic mean of precision and recall of the normalised tokens (a multiset overlap). A
question scores the maximum over its ground-truth answers.
"""

import collections
import logging
import re
import string
from collections.abc import Mapping, Sequence

_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation, drop a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def _check_truths(ground_truths: Sequence[str]) -> None:
    if isinstance(ground_truths, str) or not ground_truths:
        raise ValueError(
            f"ground_truths must be a non-empty sequence of strings, got {ground_truths!r}"
        )


def exact_match(prediction: str, ground_truths: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised ground truth, else 0.0."""
    _check_truths(ground_truths)
    prediction = normalize_answer(prediction)
    return float(any(prediction == normalize_answer(truth) for truth in ground_truths))


def _token_f1(prediction_tokens: list[str], truth_tokens: list[str]) -> float:
    same = sum(
        (collections.Counter(prediction_tokens) & collections.Counter(truth_tokens)).values()
    )
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction_tokens), same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def f1(prediction: str, ground_truths: Sequence[str]) -> float:
    """Best token-overlap F1 of the prediction against the ground truths."""
    _check_truths(ground_truths)
    tokens = normalize_answer(prediction).split()
    return max(_token_f1(tokens, normalize_answer(truth).split()) for truth in ground_truths)


def evaluate(
    ground_truths: Mapping[str, Sequence[str]], predictions: Mapping[str, str]
) -> dict[str, float]:
    """{"exact_match", "f1"} in percent over all questions, as the official script prints.

    Args:
      ground_truths: question id → answer texts, e.g.
        `{e.qas_id: e.answer_texts for e in data.squad.read_squad(path)}`.
      predictions: question id → predicted text. A question without a prediction scores 0
        (logged, as the official script does); predictions for unknown ids are ignored.
    """
    if not ground_truths:
        raise ValueError("no questions to score")
    missing = [qas_id for qas_id in ground_truths if qas_id not in predictions]
    if missing:
        logging.warning("%d unanswered questions score 0, e.g. %r", len(missing), missing[0])
    total_exact = total_f1 = 0.0
    for qas_id, truths in ground_truths.items():
        if qas_id in predictions:
            total_exact += exact_match(predictions[qas_id], truths)
            total_f1 += f1(predictions[qas_id], truths)
    return {
        "exact_match": 100.0 * total_exact / len(ground_truths),
        "f1": 100.0 * total_f1 / len(ground_truths),
    }
