"""GPT-1's input transformations for fine-tuning (Radford et al. 2018, section 3.3, figure 1).

A task's structured input becomes token sequences the pre-trained model can read, framed by a
start token ⟨s⟩, a delimiter $ and an extract token ⟨e⟩ whose last-block state the classifier
reads (`models.gpt.GPTClassifier`):

    classification   ⟨s⟩ text ⟨e⟩
    entailment       ⟨s⟩ premise $ hypothesis ⟨e⟩
    similarity       ⟨s⟩ a $ b ⟨e⟩  and  ⟨s⟩ b $ a ⟨e⟩: both orders, each a segment of one row

The paper adds new, randomly initialised tokens. Ours come from the pre-training run's tokenizer
(`tokenizers.train_sentencepiece`: [PAD], [UNK], [CLS], [SEP], [MASK]), whose documents were
framed as [CLS] text [SEP] (`data.language_model`):

- ⟨s⟩ = [CLS], what every pre-training document starts with, so a text is read as the model
  learnt to read one from its start;
- ⟨e⟩ = [SEP], the end of a text: pre-training predicts it after the last token but never reads
  it, so as an input it is new, as the paper's is, yet its (tied) embedding is trained;
- $ = [MASK], which GPT pre-training neither reads nor predicts: the nearest thing the
  vocabulary has to a new token.

A feature row holds one sequence (two for similarity), 0-padded to T:

    inputs       [CLS] a b [MASK] c d [SEP]  0 0
    segment_ids  1     1 1 1      1 1 1      0 0     (similarity: 1 … 1 2 … 2)
    positions    0     1 2 3      4 5 6      0 0     (restarting with each segment)

Z rows, T the longest row.
"""

from collections.abc import Sequence

import numpy as np

from attention_jax.data import glue
from attention_jax.data.tokenizers import Tokenizer

FEATURES = ("inputs", "segment_ids", "positions")


def transform(
    ids: Sequence[Sequence[int]], tokenizer: Tokenizer, *, similarity: bool = False
) -> list[list[int]]:
    """The token sequences of one example of one text [a] or two [a, b]: [⟨s⟩ a ⟨e⟩],
    [⟨s⟩ a $ b ⟨e⟩], or with `similarity` both orders [⟨s⟩ a $ b ⟨e⟩, ⟨s⟩ b $ a ⟨e⟩]."""
    start, delimiter, extract = tokenizer.cls_id, tokenizer.mask_id, tokenizer.sep_id
    if len(ids) == 1 and not similarity:
        return [[start, *ids[0], extract]]
    if len(ids) != 2:
        raise ValueError(
            f"expected two texts{' for similarity' if similarity else ''}, got {len(ids)}"
        )
    a, b = ids
    orders = [(a, b), (b, a)] if similarity else [(a, b)]
    return [[start, *first, delimiter, *second, extract] for first, second in orders]


def features(
    texts: Sequence[tuple[str, ...]],
    labels_Z: np.ndarray,
    tokenizer: Tokenizer,
    *,
    max_len: int,
    similarity: bool = False,
) -> dict[str, np.ndarray]:
    """Tokenises, truncates (the texts' ends, the longer text first) and transforms each example.

    Args:
      texts: one text (classification) or two (entailment, or similarity) per example.
      max_len: T, the tokens of a row, special tokens (and with `similarity` both orders)
        included.

    Returns:
      FEATURES: int32 [Z, T]; "label": int32 [Z]; "weight": float32 [Z], 1 per row.
    """
    if len(texts) != len(labels_Z):
        raise ValueError(f"{len(texts)} texts but {len(labels_Z)} labels")
    orders = 2 if similarity else 1
    rows = {name: np.zeros((len(texts), max_len), np.int32) for name in FEATURES}
    columns = [tokenizer.encode_batch(column) for column in zip(*texts, strict=True)]
    for z, ids in enumerate(zip(*columns, strict=True)):
        ids = [list(part) for part in ids]
        room = max_len // orders - len(ids) - 1  # special tokens: ⟨s⟩, ⟨e⟩ and $ for pairs
        if room < 1:
            raise ValueError(f"max_len {max_len} leaves no room for text")
        if len(ids) == 1:
            del ids[0][room:]
        else:
            glue.truncate_pair(ids[0], ids[1], room)
        t = 0
        for segment, tokens in enumerate(transform(ids, tokenizer, similarity=similarity), 1):
            n = len(tokens)
            rows["inputs"][z, t : t + n] = tokens
            rows["segment_ids"][z, t : t + n] = segment
            rows["positions"][z, t : t + n] = np.arange(n)
            t += n
    return {
        **rows,
        "label": np.asarray(labels_Z, np.int32),
        "weight": np.ones(len(texts), np.float32),
    }


def lengths(features: dict[str, np.ndarray]) -> np.ndarray:
    """The tokens of each row (padding excluded), for `batching.FeatureBatches`."""
    return (features["segment_ids"] > 0).sum(1)
