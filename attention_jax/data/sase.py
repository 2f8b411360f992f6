"""Sentence classification data for the SASE classifier (Lin et al. 2017): texts, a word
vocabulary, word vectors, and length-bucketed batches of token ids.

    texts, labels_Z = read_sentences("sst2", train_file="../shared/data/sst2/train.tsv")
    vocabulary = WordVocabulary.build(train_texts, min_count=1)
    vectors_VM, found = read_word_vectors("glove.txt", vocabulary)
    batches = SentenceBatches([vocabulary.encode(t) for t in texts], labels_Z, 64, seed=0)

The local SST-2 file goes through `glue.read_glue_tsv`; TFDS datasets are read by name
(`glue/sst2`, `yelp_polarity_reviews`) for users with internet. A batch is {"tokens": B×L
int32, 0-padded, "label": B, "weight": B} (plus "tokens_b" for pairs), with L the longest row
rounded up to a multiple of `bucket`, so a jitted step compiles once per bucket.

B batch, L padded length, V vocabulary, M vector size, Z rows.
"""

import collections
import os
from collections.abc import Sequence

import numpy as np

from attention_jax.data import batching, glue

PAD, UNK = "[PAD]", "[UNK]"
# TFDS datasets by name: (text feature(s), label feature).
TFDS_FEATURES = {
    "glue/sst2": (("sentence",), "label"),
    "yelp_polarity_reviews": (("text",), "label"),
    "snli": (("premise", "hypothesis"), "label"),
}


def words(text: str) -> list[str]:
    """Lower-cased whitespace words (SST-2 is already tokenised)."""
    return text.lower().split()


class WordVocabulary:
    """Words seen in training ([PAD] = 0, [UNK] = 1), with the tokenizer calls SASE uses."""

    def __init__(self, tokens: Sequence[str]):
        if tuple(tokens[:2]) != (PAD, UNK):
            raise ValueError(f"a word vocabulary starts with {PAD}, {UNK}; got {tokens[:2]}")
        self.tokens = list(tokens)
        self._ids = {t: i for i, t in enumerate(self.tokens)}
        self.vocab_size, self.pad_id, self.unk_id = len(self.tokens), 0, 1

    @classmethod
    def build(cls, texts: Sequence[str], min_count: int = 1) -> "WordVocabulary":
        """Words of `texts` seen at least `min_count` times, most frequent first."""
        counts = collections.Counter(w for text in texts for w in words(text))
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: -counts[w])
        return cls([PAD, UNK, *kept])

    @classmethod
    def load(cls, path) -> "WordVocabulary":
        with open(path, encoding="utf-8") as f:
            return cls(f.read().splitlines())

    def save(self, path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(f"{t}\n" for t in self.tokens))

    def encode(self, text: str) -> list[int]:
        return [self._ids.get(w, self.unk_id) for w in words(text)]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def get(self, word: str) -> int | None:
        """The id of `word` (lower-cased), or None outside the vocabulary."""
        return self._ids.get(word.lower())

    def id_to_token(self, token_id: int) -> str:
        return self.tokens[int(token_id)]


def read_word_vectors(path, vocabulary: WordVocabulary, seed: int = 0):
    """Rows of a word2vec / GloVe text file for the vocabulary: (vectors_VM float32, found).

    Lines are `word v_1 … v_M` (a word2vec header line `count M` is skipped); words are matched
    lower-cased. Words without a vector keep random rows of the vectors' scale; [PAD] is zero.
    """
    if not os.path.isfile(path):
        raise ValueError(f"word vectors {path} do not exist")
    rows = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip().split(" ")
            if len(parts) < 3:
                continue  # the word2vec header, or an empty line
            index = vocabulary.get(parts[0])
            if index is not None and index not in rows:
                rows[index] = np.asarray(parts[1:], np.float32)
    if not rows:
        raise ValueError(f"{path}: no vector for any of the {vocabulary.vocab_size} words")
    found_VM = np.stack(list(rows.values()))
    vectors_VM = np.random.default_rng(seed).normal(
        0.0, found_VM.std(), (vocabulary.vocab_size, found_VM.shape[1])
    )
    vectors_VM[list(rows)] = found_VM
    vectors_VM[vocabulary.pad_id] = 0.0
    return vectors_VM.astype(np.float32), len(rows)


def read_sentences(dataset: str, split: str = "train", *, train_file=None, data_dir=None):
    """(texts, labels_Z): texts[i] a tuple of 1 (or 2, for pairs) strings.

    `dataset` "sst2" reads the GLUE TSV `train_file`; any name of `TFDS_FEATURES` is loaded
    with TFDS (`split` "train", "validation", "test"; needs the data or internet).
    """
    if dataset == "sst2":
        if train_file is None or not os.path.isfile(train_file):
            raise ValueError(f"data.train_file {train_file} does not exist")
        return glue.read_glue_tsv(train_file)
    if dataset not in TFDS_FEATURES:
        raise ValueError(f"dataset must be 'sst2' or one of {tuple(TFDS_FEATURES)}: {dataset!r}")
    import tensorflow_datasets as tfds

    text_keys, label_key = TFDS_FEATURES[dataset]
    texts, labels = [], []
    for row in tfds.as_numpy(tfds.load(dataset, split=split, data_dir=data_dir)):
        if row[label_key] < 0:  # SNLI's unlabelled pairs
            continue
        texts.append(tuple(row[k].decode("utf-8") for k in text_keys))
        labels.append(row[label_key])
    return texts, np.asarray(labels, np.int32)


class SentenceBatches(batching.LengthBucketedBatches):
    """Batches of token ids ("tokens", and "tokens_b" for pairs), "label" and "weight",
    bucketed by length when shuffled (`batching.LengthBucketedBatches`).

    Each batch is padded to its longest row rounded up to a multiple of `bucket`. Without
    `shuffle`, rows keep their order for one pass, and the last batch is filled with empty rows
    of weight 0.
    """

    def __init__(
        self,
        rows: Sequence[Sequence[Sequence[int]]],
        labels_Z,
        batch_size: int,
        seed: int = 0,
        *,
        shuffle: bool = True,
        bucket: int = 8,
        pool_batches: int = 50,
    ):
        self._rows = [[list(r) for r in row] for row in rows]
        self._labels_Z = np.asarray(labels_Z, np.int32)
        if len(self._rows) != len(self._labels_Z):
            raise ValueError(f"{len(self._rows)} rows but {len(self._labels_Z)} labels")
        self._bucket = bucket
        lengths = [max(max(len(r) for r in row), 1) for row in self._rows]
        super().__init__(lengths, batch_size, seed, shuffle=shuffle, pool_batches=pool_batches)

    def _make_batch(self, indices) -> dict[str, np.ndarray]:
        B = self._batch_size
        L = -(-int(self._lengths[indices].max()) // self._bucket) * self._bucket
        batch = {"label": np.zeros(B, np.int32), "weight": np.zeros(B, np.float32)}
        batch["label"][: len(indices)] = self._labels_Z[indices]
        batch["weight"][: len(indices)] = 1.0
        for part, key in enumerate(("tokens", "tokens_b")[: len(self._rows[0])]):
            batch[key] = np.zeros((B, L), np.int32)
            for b, i in enumerate(indices):
                batch[key][b, : len(self._rows[i][part])] = self._rows[i][part]
        return batch
