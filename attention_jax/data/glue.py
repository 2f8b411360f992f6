"""GLUE sentence(-pair) classification data for BERT fine-tuning (Devlin et al. 2019, sec. 4.1).

Reads the GLUE TSV files (SST-2: `label<TAB>sentence`; MRPC: `Quality<TAB>#1 ID<TAB>#2 ID<TAB>
#1 String<TAB>#2 String`) and turns them into the fixed-size inputs of google-research/bert's
`run_classifier.py`: `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`, truncated and zero-padded.

Tokenisation is WordPiece from the `tokenizers` library, e.g.
`tokenizers.BertWordPieceTokenizer("vocab.txt", lowercase=True)`; any object with the same
`encode(...)` / `token_to_id(...)` API works. Truncation and padding must be off in the tokenizer
(this module does both, as BERT does).

E examples, T max_seq_length.
"""

import os
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np

# The official SST-2 dev set has 872 sentences; carving as many rows out of train gives the
# validation accuracy the same sampling noise.
SST2_VALIDATION_SIZE = 872


class WordPieceEncoder(Protocol):
    """The part of the `tokenizers` API the fine-tuning readers use."""

    def encode(
        self,
        sequence: Any,
        pair: Any = None,
        is_pretokenized: bool = False,
        add_special_tokens: bool = True,
    ) -> Any: ...

    def token_to_id(self, token: str) -> int | None: ...


class SpecialIds(NamedTuple):
    cls: int
    sep: int
    pad: int
    unk: int


def special_ids(tokenizer: WordPieceEncoder) -> SpecialIds:
    """Looks up [CLS], [SEP], [PAD], [UNK]; rejects tokenizers that truncate or pad themselves."""
    for setting in ("truncation", "padding"):
        if getattr(tokenizer, setting, None) is not None:
            raise ValueError(f"tokenizer has {setting} enabled; disable it, the reader does it")
    ids = {name: tokenizer.token_to_id(f"[{name.upper()}]") for name in SpecialIds._fields}
    missing = [f"[{name.upper()}]" for name, i in ids.items() if i is None]
    if missing:
        raise ValueError(f"tokenizer vocabulary lacks {', '.join(missing)}")
    return SpecialIds(**ids)


def build_inputs(
    ids_a: Sequence[int], ids_b: Sequence[int] | None, special: SpecialIds, max_seq_length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`[CLS] a [SEP] (b [SEP])` → (input_ids_T, input_mask_T, segment_ids_T), int32, zero-padded.

    The caller truncates; this only checks that the result fits.
    """
    tokens = [special.cls, *ids_a, special.sep]
    segments = [0] * len(tokens)
    if ids_b is not None:
        tokens += [*ids_b, special.sep]
        segments += [1] * (len(ids_b) + 1)
    if len(tokens) > max_seq_length:
        raise ValueError(f"{len(tokens)} tokens do not fit max_seq_length={max_seq_length}")
    input_ids_T = np.full(max_seq_length, special.pad, np.int32)
    input_mask_T = np.zeros(max_seq_length, np.int32)
    segment_ids_T = np.zeros(max_seq_length, np.int32)
    input_ids_T[: len(tokens)] = tokens
    input_mask_T[: len(tokens)] = 1
    segment_ids_T[: len(tokens)] = segments
    return input_ids_T, input_mask_T, segment_ids_T


def stack_inputs(
    rows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], max_seq_length: int
) -> dict[str, np.ndarray]:
    """Stacks `build_inputs` rows into {"input_ids", "input_mask", "segment_ids"}: int32 [E, T]."""
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
      (texts, labels_E): texts[i] is a tuple of 1 or 2 strings; labels_E int32 class ids.
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


def _truncate_pair(ids_a: list[int], ids_b: list[int], max_length: int) -> None:
    """run_classifier.py's `_truncate_seq_pair`: drop tokens from the end of the longer one."""
    while len(ids_a) + len(ids_b) > max_length:
        (ids_a if len(ids_a) > len(ids_b) else ids_b).pop()


def classification_features(
    texts: Sequence[tuple[str, ...]],
    labels_E: np.ndarray,
    tokenizer: WordPieceEncoder,
    *,
    max_seq_length: int = 128,
) -> dict[str, np.ndarray]:
    """Tokenises, truncates and pads as google-research/bert's `convert_single_example`.

    Returns:
      {"input_ids", "input_mask", "segment_ids"}: int32 [E, T]; "label": int32 [E].
    """
    if len(texts) != len(labels_E):
        raise ValueError(f"{len(texts)} texts but {len(labels_E)} labels")
    special = special_ids(tokenizer)
    rows = []
    for text in texts:
        ids = [tokenizer.encode(part, add_special_tokens=False).ids for part in text]
        if len(ids) == 1:
            rows.append(build_inputs(ids[0][: max_seq_length - 2], None, special, max_seq_length))
        else:
            _truncate_pair(ids[0], ids[1], max_seq_length - 3)
            rows.append(build_inputs(ids[0], ids[1], special, max_seq_length))
    return {**stack_inputs(rows, max_seq_length), "label": np.asarray(labels_E, np.int32)}


def train_validation_split(
    features: dict[str, np.ndarray], *, validation_size: int = SST2_VALIDATION_SIZE, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Carves a validation set out of train: `validation_size` rows drawn by a fixed seed.

    The same seed and row count always give the same split (NumPy PCG64 permutation); both
    parts keep the original row order. For SST-2 the default is 872 of 67,349 rows (1.3%).

    Caution: SST-2's train file holds every sentiment-bearing phrase of each parse tree, so a
    row-level split leaks. With seed 0, 767 of the 872 validation phrases occur verbatim inside
    a longer training phrase; accuracy here reads higher than on the official sentence-level dev
    set and is not comparable with published SST-2 dev numbers.
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
