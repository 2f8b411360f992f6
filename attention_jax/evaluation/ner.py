"""Entity-level precision, recall and F1 for named entity recognition, as `conlleval.pl` counts.

An entity (chunk) is a maximal run of tokens found by conlleval's chunk rules: B-X always
starts a chunk; I-X starts one unless it follows B-X or I-X; a chunk ends before O, before any
B-, and before a tag of another type. These rules read IOB1 and IOB2 alike (I-X after O starts
a chunk), so either scheme, or a mix, is scored without conversion. A predicted entity is correct
only if a gold entity has the same type and the same first and last token. Sentence ends close
chunks. Precision, recall and F1 are micro-averaged over entities, as conlleval reports them
(here as fractions, not percent).
"""

import collections
from collections.abc import Sequence


def _split(label: str) -> tuple[str, str]:
    if label == "O":
        return "O", ""
    prefix, _, entity_type = label.partition("-")
    if prefix not in ("B", "I") or not entity_type:
        raise ValueError(f"tag {label!r} is not O, B-TYPE or I-TYPE")
    return prefix, entity_type


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first token, last token) of every chunk in one sentence, by conlleval's rules."""
    chunks, begin = [], 0
    previous_tag, previous_type = "O", ""
    # A trailing O closes a chunk that runs to the end of the sentence.
    for position, label in enumerate([*tags, "O"]):
        tag, entity_type = _split(label)
        if previous_tag != "O" and (tag != "I" or previous_type != entity_type):
            chunks.append((previous_type, begin, position - 1))
        if tag == "B" or (tag == "I" and (previous_tag == "O" or previous_type != entity_type)):
            begin = position
        previous_tag, previous_type = tag, entity_type
    return chunks


def _precision_recall_f1(correct: int, predicted: int, true: int) -> dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / true if true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_scores(
    true_tags: Sequence[Sequence[str]], predicted_tags: Sequence[Sequence[str]]
) -> dict:
    """Scores tag sequences, one per sentence, against the gold ones.

    Returns:
      {"precision", "recall", "f1"} over all entities; "accuracy" over tokens (full tags
      compared, as conlleval's first line); "per_type": type → {"precision", "recall", "f1",
      "support" (number of gold entities)}.
    """
    if len(true_tags) != len(predicted_tags):
        raise ValueError(f"{len(true_tags)} gold sentences but {len(predicted_tags)} predicted")
    if any(isinstance(sentence, str) for sentence in (*true_tags, *predicted_tags)):
        raise ValueError("expected one sequence of tags per sentence, got a string")
    counts = collections.defaultdict(collections.Counter)  # type → correct/predicted/true
    num_tokens = num_correct_tokens = 0
    for index, (gold, guess) in enumerate(zip(true_tags, predicted_tags, strict=True)):
        if len(gold) != len(guess):
            raise ValueError(f"sentence {index}: {len(gold)} gold tags but {len(guess)} predicted")
        num_tokens += len(gold)
        num_correct_tokens += sum(a == b for a, b in zip(gold, guess, strict=True))
        gold_chunks, guess_chunks = set(entities(gold)), set(entities(guess))
        for kind, chunks in (
            ("true", gold_chunks),
            ("predicted", guess_chunks),
            ("correct", gold_chunks & guess_chunks),
        ):
            for entity_type, _, _ in chunks:
                counts[entity_type][kind] += 1
    total = sum(counts.values(), collections.Counter())
    return {
        **_precision_recall_f1(total["correct"], total["predicted"], total["true"]),
        "accuracy": num_correct_tokens / num_tokens if num_tokens else 0.0,
        "per_type": {
            entity_type: {
                **_precision_recall_f1(c["correct"], c["predicted"], c["true"]),
                "support": c["true"],
            }
            for entity_type, c in sorted(counts.items())
        },
    }
