"""SQuAD v1.1 span question answering data for BERT fine-tuning (Devlin et al. 2019, sec. 4.2).

Follows google-research/bert's `run_squad.py`: each input is `[CLS] question [SEP] context
window [SEP]`; a context longer than fits is cut into windows that start `doc_stride` tokens
apart; the answer's start/end token positions label each window (both 0, i.e. [CLS], when the
answer is not wholly inside it); prediction takes the best-scoring valid span over all windows
of a question, counting a start token only in the window where it has the most context.

Where run_squad.py maps WordPiece tokens back through whitespace-split words
(`get_final_text`), this module keeps each token's character offsets into the context
(`Tokenizer.encode_with_offsets`), so answer spans and predicted text are exact character
slices, for WordPiece and SentencePiece alike.

Z features (windows), T max_seq_length.
"""

import dataclasses
import json
import logging
import os
from collections.abc import Sequence

import numpy as np

from attention_jax.data import tokenizers
from attention_jax.data.glue import build_inputs, stack_inputs


@dataclasses.dataclass(frozen=True)
class SquadExample:
    """One question; `answers` holds (text, answer_start) pairs, the first being the target."""

    qas_id: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]

    @property
    def answer_texts(self) -> tuple[str, ...]:
        return tuple(text for text, _ in self.answers)


def read_squad(path: str | os.PathLike) -> list[SquadExample]:
    """Reads a SQuAD v1.1 JSON file (data → paragraphs → qas → answers)."""
    with open(path, encoding="utf-8") as f:
        try:
            dataset = json.load(f)
        except ValueError as error:  # JSONDecodeError, or bytes that are not UTF-8
            raise ValueError(f"{path} is not a SQuAD JSON file ({error})") from None
    examples = []
    try:
        for article in dataset["data"]:
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    answers = tuple((a["text"], int(a["answer_start"])) for a in qa["answers"])
                    for text, start in answers:
                        if not 0 <= start <= len(context) - len(text):
                            raise ValueError(
                                f"{path}: question {qa['id']!r} has answer_start={start} "
                                f"outside its {len(context)}-character context"
                            )
                    examples.append(SquadExample(qa["id"], qa["question"], context, answers))
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path}: not SQuAD v1.1 JSON, missing or mistyped {error}") from None
    return examples


def _answer_token_span(
    example: SquadExample, offsets: Sequence[tuple[int, int]]
) -> tuple[int, int] | None:
    """First and last context token overlapping the first answer's characters.

    This is the tightest token span covering the answer, which is what run_squad.py's
    `_improve_answer_span` searches for. None when there is no answer, when the answer text
    does not match the context at answer_start, or when no token overlaps it.
    """
    if not example.answers:
        return None
    text, char_start = example.answers[0]
    char_end = char_start + len(text)
    if example.context[char_start:char_end].split() != text.split():
        return None
    inside = [i for i, (start, end) in enumerate(offsets) if start < char_end and end > char_start]
    return (inside[0], inside[-1]) if inside else None


def _doc_spans(num_tokens: int, max_tokens: int, doc_stride: int) -> list[tuple[int, int]]:
    """run_squad.py's sliding windows over the context: (start, length) pairs."""
    spans, start = [], 0
    while start < num_tokens:
        length = min(num_tokens - start, max_tokens)
        spans.append((start, length))
        if start + length == num_tokens:
            break
        start += min(length, doc_stride)
    return spans


def _max_context_span(spans: list[tuple[int, int]], num_tokens: int) -> np.ndarray:
    """For each context token, the window where it has the most context.

    run_squad.py's `_check_is_max_context`: score = min(left, right context) + 0.01 × window
    length; the first window wins ties.
    """
    best_score = np.full(num_tokens, -np.inf)
    best_span = np.zeros(num_tokens, np.int64)
    for index, (start, length) in enumerate(spans):
        position = np.arange(start, start + length)
        score = np.minimum(position - start, start + length - 1 - position) + 0.01 * length
        better = score > best_score[position]
        best_score[position[better]] = score[better]
        best_span[position[better]] = index
    return best_span


def squad_features(
    examples: Sequence[SquadExample],
    tokenizer: tokenizers.Tokenizer,
    *,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
    is_training: bool = False,
) -> dict[str, np.ndarray]:
    """Windows, labels and offset maps, as run_squad.py's `convert_examples_to_features`.

    Args:
      is_training: each example must then have exactly one answer, and examples whose answer
        cannot be found in the context are skipped (logged), as run_squad.py does. For
        evaluation every example is kept and labelled from its first answer where possible.

    Returns:
      "input_ids", "input_mask", "segment_ids": int32 [Z, T]; "start_positions",
      "end_positions": int32 [Z] (0 = [CLS] when the answer is not inside the window);
      "example_index": int32 [Z], the example each window came from; "token_offsets": int32
      [Z, T, 2], each context token's [start, end) characters in the context, -1 elsewhere;
      "token_is_max_context": bool [Z, T].
    """
    if doc_stride < 1:
        raise ValueError(f"doc_stride must be positive, got {doc_stride}")
    rows, labels, example_index, token_offsets, is_max_context = [], [], [], [], []
    num_skipped = 0
    for index, example in enumerate(examples):
        question_ids = tokenizer.encode(example.question)[:max_query_length]
        context = tokenizer.encode_with_offsets(example.context)
        answer = _answer_token_span(example, context.offsets)
        if is_training:
            if len(example.answers) != 1:
                raise ValueError(
                    f"training question {example.qas_id!r} has {len(example.answers)} answers, "
                    "expected 1"
                )
            if answer is None:
                num_skipped += 1
                continue
        max_tokens = max_seq_length - len(question_ids) - 3
        if max_tokens < 1:
            raise ValueError(
                f"max_seq_length={max_seq_length} leaves no room for context after a "
                f"{len(question_ids)}-token question"
            )
        spans = _doc_spans(len(context.ids), max_tokens, doc_stride)
        best_span = _max_context_span(spans, len(context.ids))
        # The window's first context token sits after [CLS] question [SEP].
        context_at = len(question_ids) + 2
        for span_index, (start, length) in enumerate(spans):
            window = slice(context_at, context_at + length)
            rows.append(
                build_inputs(
                    question_ids, context.ids[start : start + length], tokenizer, max_seq_length
                )
            )
            offsets_T2 = np.full((max_seq_length, 2), -1, np.int32)
            offsets_T2[window] = context.offsets[start : start + length]
            is_max_T = np.zeros(max_seq_length, bool)
            is_max_T[window] = best_span[start : start + length] == span_index
            if answer is not None and start <= answer[0] and answer[1] < start + length:
                labels.append((answer[0] - start + context_at, answer[1] - start + context_at))
            else:
                labels.append((0, 0))
            example_index.append(index)
            token_offsets.append(offsets_T2)
            is_max_context.append(is_max_T)
    if num_skipped:
        logging.warning(
            "skipped %d training questions whose answer is not in the context", num_skipped
        )
    labels_Z2 = np.asarray(labels, np.int32).reshape(-1, 2)
    return {
        **stack_inputs(rows, max_seq_length),
        "start_positions": labels_Z2[:, 0],
        "end_positions": labels_Z2[:, 1],
        "example_index": np.asarray(example_index, np.int32),
        "token_offsets": np.asarray(token_offsets, np.int32).reshape(-1, max_seq_length, 2),
        "token_is_max_context": np.asarray(is_max_context, bool).reshape(-1, max_seq_length),
    }


def _top_indexes(logits_T: np.ndarray, n: int) -> np.ndarray:
    """Indexes of the n largest logits, largest first, earlier index first on ties."""
    return np.argsort(-logits_T, kind="stable")[:n]


def squad_predictions(
    examples: Sequence[SquadExample],
    features: dict[str, np.ndarray],
    start_logits_ZT: np.ndarray,
    end_logits_ZT: np.ndarray,
    *,
    n_best_size: int = 20,
    max_answer_length: int = 30,
) -> tuple[dict[str, str], dict[str, list[dict[str, float | str]]]]:
    """Best answer text per question from start/end logits, as run_squad.py's `write_predictions`.

    For every window, pairs of the `n_best_size` best start and end tokens are candidates if
    both lie in the context, the start token has its maximum context in this window, start ≤
    end and the span is at most `max_answer_length` tokens. Candidates over all windows of a
    question are ranked by start + end logit and de-duplicated by text.

    Returns:
      (predictions, nbest): predictions[qas_id] is the best text ("" when no candidate is valid;
      run_squad.py writes "empty"); nbest[qas_id] lists up to `n_best_size` dicts with "text",
      "probability" (softmax over the n-best scores), "start_logit", "end_logit".
    """
    start_logits_ZT = np.asarray(start_logits_ZT, np.float64)
    end_logits_ZT = np.asarray(end_logits_ZT, np.float64)
    for name, logits in (("start", start_logits_ZT), ("end", end_logits_ZT)):
        if logits.shape != features["input_ids"].shape:
            raise ValueError(
                f"{name} logits have shape {logits.shape}, features {features['input_ids'].shape}"
            )
    offsets_ZT2 = features["token_offsets"]
    windows_of = [[] for _ in examples]
    for feature in range(len(features["example_index"])):
        windows_of[features["example_index"][feature]].append(feature)
    predictions, nbest = {}, {}
    for example, windows in zip(examples, windows_of, strict=True):
        candidates = []  # (score, start logit, end logit, feature, start, end)
        for feature in windows:
            starts = _top_indexes(start_logits_ZT[feature], n_best_size)
            ends = _top_indexes(end_logits_ZT[feature], n_best_size)
            in_context_T = offsets_ZT2[feature, :, 0] >= 0
            for start in starts:
                if not (in_context_T[start] and features["token_is_max_context"][feature, start]):
                    continue
                for end in ends:
                    if in_context_T[end] and start <= end < start + max_answer_length:
                        s, e = start_logits_ZT[feature, start], end_logits_ZT[feature, end]
                        candidates.append((s + e, s, e, feature, start, end))
        # Python's sort is stable, so equal scores keep run_squad.py's enumeration order.
        candidates.sort(key=lambda candidate: candidate[0], reverse=True)
        entries, scores = [], []
        for score, s, e, feature, start, end in candidates:
            if len(entries) == n_best_size:
                break
            text = example.context[offsets_ZT2[feature, start, 0] : offsets_ZT2[feature, end, 1]]
            if all(text != entry["text"] for entry in entries):
                entries.append({"text": text, "start_logit": float(s), "end_logit": float(e)})
                scores.append(score)
        if entries:
            probabilities = np.exp(np.array(scores) - max(scores))
            for entry, probability in zip(entries, probabilities, strict=True):
                entry["probability"] = float(probability / probabilities.sum())
        predictions[example.qas_id] = entries[0]["text"] if entries else ""
        nbest[example.qas_id] = entries
    return predictions, nbest
