"""Language-model data: a corpus's documents, tokenized, held out by document, packed into rows.

A document is framed as [CLS] u_1 … u_n [SEP] (the tokenizer's [CLS] starts a text and its [SEP]
ends it, as GPT-1's start and end tokens), so the model learns both how texts begin and when they
end. Its inputs are the framed tokens but the last and its targets the framed tokens but the
first. Documents longer than a row are cut into pieces of at most T inputs; pieces are packed
into rows of T positions one after another, a new row starting when the next piece does not fit:

    inputs       [CLS] a b c [CLS] d e  0      (0 = padding)
    targets      a b c [SEP] d e [SEP]  0
    segment_ids  1 1 1 1     2 2 2      0
    positions    0 1 2 3     0 1 2      0

Attention is masked by segment (`GPT`), so no document sees another; positions restart with each
piece. Each real token is a target exactly once, which is what held-out perplexity needs.

Z rows, T row length.
"""

import dataclasses
import pathlib

import numpy as np

from attention_jax.data import bert_pretraining, corpus, tokenizers
from attention_jax.data.tokenizers import Tokenizer

FEATURES = ("inputs", "targets", "segment_ids", "positions")


def frame(ids: list[int], tokenizer: Tokenizer) -> list[int]:
    """[CLS] ids [SEP]: a whole document as the model reads and predicts it."""
    return [tokenizer.cls_id, *ids, tokenizer.sep_id]


def pack_documents(documents: list[list[int]], T: int) -> dict[str, np.ndarray]:
    """Packs framed documents into rows: FEATURES, each int32 of shape (Z, T)."""
    if T < 1:
        raise ValueError(f"sequence length must be positive, got {T}")
    pieces = [
        document[start : start + T + 1]
        for document in documents
        if len(document) > 1
        for start in range(0, len(document) - 1, T)
    ]
    if not pieces:
        raise ValueError("no document has a token to predict")
    rows, row = [], []
    for piece in pieces:  # piece: its inputs and targets, len(piece) - 1 positions
        if sum(len(p) - 1 for p in row) + len(piece) - 1 > T:
            rows.append(row)
            row = []
        row.append(piece)
    rows.append(row)
    packed = {name: np.zeros((len(rows), T), np.int32) for name in FEATURES}
    for z, row in enumerate(rows):
        t = 0
        for segment, piece in enumerate(row, start=1):
            n = len(piece) - 1
            packed["inputs"][z, t : t + n] = piece[:-1]
            packed["targets"][z, t : t + n] = piece[1:]
            packed["segment_ids"][z, t : t + n] = segment
            packed["positions"][z, t : t + n] = np.arange(n)
            t += n
    return packed


@dataclasses.dataclass
class Corpus:
    """A tokenized corpus split by document.

    Attributes:
      train, eval: framed token ids of each document.
      eval_texts: the held-out documents' text, for per-word perplexity.
      tokenizer: the tokenizer the ids come from.
    """

    train: list[list[int]]
    eval: list[list[int]]
    eval_texts: list[str]
    tokenizer: Tokenizer


def prepare(data_config) -> Corpus:
    """Splits the corpus by document, trains the tokenizer on the training documents (a few
    seconds) and tokenizes both splits.

    `data_config` fields: corpus_dir (see `data.corpus`; a document's lines are joined by
    spaces), output_dir (the tokenizer lands in `output_dir/spm.model`), tokenizer ("bpe", or
    "char": every character of the corpus a token), vocab_size (an upper bound), lowercase,
    eval_fraction, seed.
    """
    d = data_config
    if d.tokenizer not in ("bpe", "char"):
        raise ValueError(f"tokenizer must be 'bpe' or 'char', got {d.tokenizer!r}")
    documents = corpus.read_documents(corpus.list_corpus_files(d.corpus_dir))
    train_docs, eval_docs = bert_pretraining.split_documents(documents, d.eval_fraction, d.seed)
    output_dir = pathlib.Path(d.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    lines_file = output_dir / "train_lines.txt"
    lines_file.write_text("\n".join(line for doc in train_docs for line in doc), encoding="utf-8")
    tokenizer = tokenizers.train_sentencepiece(
        [lines_file],
        output_dir,
        d.vocab_size,
        lowercase=d.lowercase,
        model_type=d.tokenizer,
        character_coverage=1.0 if d.tokenizer == "char" else 0.9995,
        seed=d.seed,
    )
    lines_file.unlink()

    def encode(docs):
        return [frame(ids, tokenizer) for ids in tokenizer.encode_batch(texts(docs))]

    return Corpus(encode(train_docs), encode(eval_docs), texts(eval_docs), tokenizer)


def texts(documents: list[list[str]]) -> list[str]:
    """Each document's lines joined by spaces."""
    return [" ".join(lines) for lines in documents]


def count_words(texts: list[str]) -> int:
    """Whitespace-separated words: the unit of per-word perplexity, the same whatever the
    tokenizer, so models with different vocabularies compare."""
    return sum(len(text.split()) for text in texts)
