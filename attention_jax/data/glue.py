"""GLUE sentence(-pair) classification data for BERT fine-tuning (Devlin et al. 2019, sec. 4.1).

Reads the GLUE TSV files (SST-2: `label<TAB>sentence`; MRPC: `Quality<TAB>#1 ID<TAB>#2 ID<TAB>
#1 String<TAB>#2 String`) and turns them into the fixed-size inputs of google-research/bert's
`run_classifier.py`: `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`, truncated and zero-padded.

Tokenisation is by a `tokenizers.Tokenizer` (`WordPieceTokenizer` for imported checkpoints,
`SentencePieceTokenizer` for our pre-training runs), which adds no special tokens and neither
truncates nor pads: this module does all three, as BERT does. `sentence_split` carves a
validation set out of SST-2's train file without the phrase leak of a row-level split.

Z examples, T max_seq_length.
"""

import bisect
import os
from collections.abc import Sequence

import numpy as np

from attention_jax.data import tokenizers

# The official SST-2 dev set has 872 sentences; carving as many rows out of train gives the
# validation accuracy the same sampling noise.
SST2_VALIDATION_SIZE = 872


def build_inputs(
    ids_a: Sequence[int],
    ids_b: Sequence[int] | None,
    tokenizer: tokenizers.Tokenizer,
    max_seq_length: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`[CLS] a [SEP] (b [SEP])` → (input_ids_T, input_mask_T, segment_ids_T), int32, padded.

    The special ids are the tokenizer's. The caller truncates; this only checks that the
    result fits.
    """
    tokens = [tokenizer.cls_id, *ids_a, tokenizer.sep_id]
    segments = [0] * len(tokens)
    if ids_b is not None:
        tokens += [*ids_b, tokenizer.sep_id]
        segments += [1] * (len(ids_b) + 1)
    if len(tokens) > max_seq_length:
        raise ValueError(f"{len(tokens)} tokens do not fit max_seq_length={max_seq_length}")
    input_ids_T = np.full(max_seq_length, tokenizer.pad_id, np.int32)
    input_mask_T = np.zeros(max_seq_length, np.int32)
    segment_ids_T = np.zeros(max_seq_length, np.int32)
    input_ids_T[: len(tokens)] = tokens
    input_mask_T[: len(tokens)] = 1
    segment_ids_T[: len(tokens)] = segments
    return input_ids_T, input_mask_T, segment_ids_T


def stack_inputs(
    rows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], max_seq_length: int
) -> dict[str, np.ndarray]:
    """Stacks `build_inputs` rows into {"input_ids", "input_mask", "segment_ids"}: int32 [Z, T]."""
    keys = ("input_ids", "input_mask", "segment_ids")
    if not rows:
        return {key: np.zeros((0, max_seq_length), np.int32) for key in keys}
    return {
        key: np.stack(column) for key, column in zip(keys, zip(*rows, strict=True), strict=True)
    }


def read_glue_tsv(
    path: str | os.PathLike,
    *,
    text_columns: Sequence[str] = ("sentence",),
    label_column: str = "label",
    labels: Sequence[str] = ("0", "1"),
) -> tuple[list[tuple[str, ...]], np.ndarray]:
    """Reads a GLUE TSV with a header row.

    Args:
      text_columns: one column name for single sentences (SST-2), two for pairs
        (MRPC: `("#1 String", "#2 String")`).
      label_column: header name of the label column ("Quality" for MRPC).
      labels: the label strings in class-id order.

    Returns:
      (texts, labels_Z): texts[i] is a tuple of 1 or 2 strings; labels_Z int32 class ids.
    """
    if len(text_columns) not in (1, 2):
        raise ValueError(f"text_columns must name 1 or 2 columns, got {len(text_columns)}")
    label_ids = {label: i for i, label in enumerate(labels)}
    with open(path, encoding="utf-8") as f:
        # GLUE TSVs are not CSV-quoted (quotes are literal text), so split on tabs only.
        lines = f.read().splitlines()
    if not lines:
        raise ValueError(f"{path}: empty file, expected a header row")
    header = lines[0].split("\t")
    wanted = [*text_columns, label_column]
    absent = [name for name in wanted if name not in header]
    if absent:
        raise ValueError(f"{path}: header {header} lacks column(s) {absent}")
    text_at = [header.index(name) for name in text_columns]
    label_at = header.index(label_column)
    texts, class_ids = [], []
    for line_number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(header):
            raise ValueError(
                f"{path}:{line_number}: expected {len(header)} tab-separated fields, "
                f"got {len(fields)}"
            )
        if fields[label_at] not in label_ids:
            raise ValueError(
                f"{path}:{line_number}: label {fields[label_at]!r} is not one of {tuple(labels)}"
            )
        texts.append(tuple(fields[i] for i in text_at))
        class_ids.append(label_ids[fields[label_at]])
    return texts, np.asarray(class_ids, np.int32)


def truncate_pair(ids_a: list[int], ids_b: list[int], max_length: int) -> None:
    """run_classifier.py's `_truncate_seq_pair`: drop tokens from the end of the longer one."""
    while len(ids_a) + len(ids_b) > max_length:
        (ids_a if len(ids_a) > len(ids_b) else ids_b).pop()


def classification_features(
    texts: Sequence[tuple[str, ...]],
    labels_Z: np.ndarray,
    tokenizer: tokenizers.Tokenizer,
    *,
    max_seq_length: int = 128,
) -> dict[str, np.ndarray]:
    """Tokenises, truncates and pads as google-research/bert's `convert_single_example`.

    Returns:
      {"input_ids", "input_mask", "segment_ids"}: int32 [Z, T]; "label": int32 [Z].
    """
    if len(texts) != len(labels_Z):
        raise ValueError(f"{len(texts)} texts but {len(labels_Z)} labels")
    rows = []
    for text in texts:
        ids = [list(tokenizer.encode(part)) for part in text]
        if len(ids) == 1:
            rows.append(build_inputs(ids[0][: max_seq_length - 2], None, tokenizer, max_seq_length))
        else:
            truncate_pair(ids[0], ids[1], max_seq_length - 3)
            rows.append(build_inputs(ids[0], ids[1], tokenizer, max_seq_length))
    return {**stack_inputs(rows, max_seq_length), "label": np.asarray(labels_Z, np.int32)}


def train_validation_split(
    features: dict[str, np.ndarray], *, validation_size: int = SST2_VALIDATION_SIZE, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Carves a validation set out of train: `validation_size` rows drawn by a fixed seed.

    The same seed and row count always give the same split (NumPy PCG64 permutation); both
    parts keep the original row order. For SST-2 the default is 872 of 67,349 rows (1.3%).

    Caution: SST-2's train file holds every sentiment-bearing phrase of each parse tree, so a
    row-level split leaks. With seed 0, 767 of the 872 validation phrases occur verbatim inside
    a longer training phrase; accuracy here reads higher than on the official sentence-level dev
    set and is not comparable with published SST-2 dev numbers. `sentence_split` avoids this.
    """
    num_rows = len(next(iter(features.values())))
    if not 0 < validation_size < num_rows:
        raise ValueError(f"validation_size must be in (0, {num_rows}), got {validation_size}")
    permutation = np.random.default_rng(seed).permutation(num_rows)
    validation_rows = np.sort(permutation[:validation_size])
    train_rows = np.sort(permutation[validation_size:])
    return (
        {key: value[train_rows] for key, value in features.items()},
        {key: value[validation_rows] for key, value in features.items()},
    )


def sentence_split(
    texts: list[tuple[str, ...]], validation_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Holds out whole sentences and drops every training phrase inside them.

    SST-2's train file holds every sentiment-bearing phrase of each parse tree, so a row-level
    split scores phrases whose sub- or super-phrases were trained on. Here a sentence is a row
    that no other row contains as a run of whole words; `validation_size` of them are drawn in
    a seeded order, and every row that is a run of words inside one of them (a sub-phrase, or a
    duplicate) leaves train. No training row contains a validation sentence, by construction.

    Returns:
      (train_rows, validation_rows, num_dropped): sorted row indices, and how many rows left
      train because they lie inside a validation sentence.
    """
    words = [" ".join(parts).split() for parts in texts]
    padded = [f" {' '.join(w)} " for w in words]  # spaces make `find` match whole words
    # Rows by decreasing length, joined: the rows longer than x are a prefix of the haystack.
    by_length = sorted(range(len(padded)), key=lambda i: -len(padded[i]))
    haystack = "\n".join(padded[i] for i in by_length)
    prefix_ends = np.cumsum([len(padded[i]) + 1 for i in by_length])
    negative_lengths = [-len(padded[i]) for i in by_length]
    validation = []
    for i in np.random.default_rng(seed).permutation(len(padded)):
        longer = bisect.bisect_left(negative_lengths, -len(padded[i]))
        if not longer or haystack.find(padded[i], 0, prefix_ends[longer - 1]) < 0:
            validation.append(int(i))
            if len(validation) == validation_size:
                break
    else:
        raise ValueError(f"only {len(validation)} sentences, fewer than {validation_size}")
    inside = {
        " ".join(w[a:b])
        for w in (words[i] for i in validation)
        for a in range(len(w))
        for b in range(a + 1, len(w) + 1)
    }
    held_out = set(validation)
    train = [i for i in range(len(words)) if i not in held_out and " ".join(words[i]) not in inside]
    num_dropped = len(words) - len(validation) - len(train)
    return np.asarray(train), np.sort(np.asarray(validation)), num_dropped
