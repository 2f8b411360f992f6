"""CoNLL-2003 named entities for BERT token classification (Devlin et al. 2019, sec. 5.3).

The file format: one token per line with space- or tab-separated columns (CoNLL-2003:
`word POS chunk NER`), a blank line between sentences, `-DOCSTART-` lines between documents.
The original CoNLL-2003 files tag in IOB1 (a chunk starts with I-, B- only separates two
adjacent chunks of one type); many copies are IOB2 (every chunk starts with B-). The reader
converts either to IOB2, which leaves the entities unchanged.

Following the paper, each word is tokenised (WordPiece, or SentencePiece for our pre-training
runs) and its label sits on its first sub-token; the other sub-tokens, [CLS], [SEP] and padding
get label `IGNORE_LABEL` (-100) and weight 0. A sentence longer than `max_seq_length` is split
into consecutive chunks of whole words, so every word gets exactly one prediction.

Z features, T max_seq_length.
"""

import os
import re
from collections.abc import Sequence

import numpy as np

from attention_jax.data import tokenizers
from attention_jax.data.glue import build_inputs, stack_inputs

IGNORE_LABEL = -100

_TAG = re.compile(r"O|[BI]-.+")


def iob2(tags: Sequence[str]) -> list[str]:
    """IOB1 or IOB2 → IOB2: an I-X that does not continue an X chunk becomes B-X."""
    converted, previous = [], "O"
    for tag in tags:
        if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        converted.append(tag)
        previous = tag
    return converted


def read_conll(
    path: str | os.PathLike, *, tag_column: int = -1, to_iob2: bool = True
) -> list[tuple[list[str], list[str]]]:
    """Reads (words, tags) sentences; the word is column 0, the tag `tag_column` (default last).

    Args:
      to_iob2: convert the tags to IOB2 (see `iob2`); False keeps them as in the file.
    """
    sentences, words, tags = [], [], []
    num_columns = None
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if words:
                    sentences.append((words, iob2(tags) if to_iob2 else tags))
                words, tags = [], []
                continue
            num_columns = num_columns or len(fields)
            if len(fields) != num_columns:
                raise ValueError(
                    f"{path}:{line_number}: expected {num_columns} columns, got {len(fields)}"
                )
            if not -len(fields) <= tag_column < len(fields) or tag_column in (0, -len(fields)):
                raise ValueError(
                    f"{path}:{line_number}: tag_column={tag_column} is not a tag column of "
                    f"{len(fields)} columns"
                )
            if not _TAG.fullmatch(fields[tag_column]):
                raise ValueError(
                    f"{path}:{line_number}: tag {fields[tag_column]!r} is not O, B-TYPE or I-TYPE"
                )
            words.append(fields[0])
            tags.append(fields[tag_column])
    if words:
        sentences.append((words, iob2(tags) if to_iob2 else tags))
    return sentences


def tag_names(sentences: Sequence[tuple[Sequence[str], Sequence[str]]]) -> tuple[str, ...]:
    """The label vocabulary: "O", then the other tags sorted by entity type, B before I."""
    tags = {tag for _, sentence_tags in sentences for tag in sentence_tags} - {"O"}
    return ("O", *sorted(tags, key=lambda tag: (tag[2:], tag[0])))


def conll_features(
    sentences: Sequence[tuple[Sequence[str], Sequence[str]]],
    tokenizer: tokenizers.Tokenizer,
    names: Sequence[str],
    *,
    max_seq_length: int = 128,
) -> dict[str, np.ndarray]:
    """Token features with the label on each word's first sub-token.

    Args:
      names: the tag vocabulary in label-id order (e.g. `tag_names(train_sentences)`).

    Returns:
      "input_ids", "input_mask", "segment_ids": int32 [Z, T]; "label_ids": int32 [Z, T]
      (`IGNORE_LABEL` off first sub-tokens); "label_weights": float32 [Z, T] (1 on first
      sub-tokens); "sentence_index": int32 [Z]; "word_index": int32 [Z, T], the word of each
      first sub-token within its sentence, -1 elsewhere.
    """
    label_of = {name: i for i, name in enumerate(names)}
    budget = max_seq_length - 2  # room left by [CLS] and [SEP]
    if budget < 1:
        raise ValueError(f"max_seq_length must be at least 3, got {max_seq_length}")
    rows, label_rows, sentence_index, word_rows = [], [], [], []

    def add_chunk(sentence, chunk):
        """chunk: (word index, sub-token ids) pairs that fit one input."""
        ids = [token for _, pieces in chunk for token in pieces]
        rows.append(build_inputs(ids, None, tokenizer, max_seq_length))
        labels_T = np.full(max_seq_length, IGNORE_LABEL, np.int32)
        words_T = np.full(max_seq_length, -1, np.int32)
        position = 1  # after [CLS]
        for word, pieces in chunk:
            labels_T[position] = label_of[sentences[sentence][1][word]]
            words_T[position] = word
            position += len(pieces)
        label_rows.append(labels_T)
        sentence_index.append(sentence)
        word_rows.append(words_T)

    for index, (words, tags) in enumerate(sentences):
        if not words or len(words) != len(tags):
            raise ValueError(f"sentence {index} has {len(words)} words and {len(tags)} tags")
        unknown = set(tags) - set(label_of)
        if unknown:
            raise ValueError(f"sentence {index} has tags {sorted(unknown)} not in names")
        encoding = tokenizer.encode_words(words)
        pieces = [[] for _ in words]
        for token, word in zip(encoding.ids, encoding.word_ids, strict=True):
            pieces[word].append(token)
        chunk, length = [], 0
        for word, word_pieces in enumerate(pieces):
            # A word the normaliser deletes entirely (e.g. U+200B) still needs a labelled
            # position; a word longer than a whole input keeps its first sub-tokens.
            word_pieces = (word_pieces or [tokenizer.unk_id])[:budget]
            if length + len(word_pieces) > budget:
                add_chunk(index, chunk)
                chunk, length = [], 0
            chunk.append((word, word_pieces))
            length += len(word_pieces)
        add_chunk(index, chunk)
    labels_ZT = np.asarray(label_rows, np.int32).reshape(-1, max_seq_length)
    return {
        **stack_inputs(rows, max_seq_length),
        "label_ids": labels_ZT,
        "label_weights": (labels_ZT != IGNORE_LABEL).astype(np.float32),
        "sentence_index": np.asarray(sentence_index, np.int32),
        "word_index": np.asarray(word_rows, np.int32).reshape(-1, max_seq_length),
    }


def word_predictions(
    predicted_ZT: np.ndarray, features: dict[str, np.ndarray], names: Sequence[str]
) -> list[list[str]]:
    """Per-token predicted label ids → one tag per word of each sentence, read at first sub-tokens.

    The result lines up with the `sentences` given to `conll_features`, ready for
    `evaluation.ner.entity_scores`.
    """
    word_index_ZT = features["word_index"]
    predicted_ZT = np.asarray(predicted_ZT)
    if predicted_ZT.shape != word_index_ZT.shape:
        raise ValueError(
            f"predictions have shape {predicted_ZT.shape}, features {word_index_ZT.shape}"
        )
    feature, position = np.nonzero(word_index_ZT >= 0)
    sentence = features["sentence_index"][feature]
    word = word_index_ZT[feature, position]
    num_sentences = int(features["sentence_index"].max()) + 1 if len(sentence) else 0
    lengths = np.zeros(num_sentences, np.int64)
    np.maximum.at(lengths, sentence, word + 1)
    tags = [[""] * length for length in lengths]
    for s, w, label in zip(sentence, word, predicted_ZT[feature, position], strict=True):
        tags[s][w] = names[label]
    return tags
