"""Tokenizers for BERT: SentencePiece trained on the corpus, WordPiece for imported checkpoints.

Both share one small interface (`Tokenizer`): the special ids BERT needs, `encode`/`decode`
without special tokens added, `word_starts_V`, which says which pieces begin a word (what
whole-word masking groups by), and for fine-tuning `encode_with_offsets` (each token's characters
in the text, for SQuAD spans) and `encode_words` (pre-split words, for CoNLL labels). V is the
vocabulary size.

Special tokens are `[PAD]` (id 0 in SentencePiece models trained here), `[UNK]`, `[CLS]`, `[SEP]`
and `[MASK]`. `[CLS]`, `[SEP]` and `[MASK]` written literally in the text encode to their id
alone in both tokenizers, as google-research/bert's and Hugging Face's tokenizers treat them, so
`encode("the [MASK] sat")` is the three tokens a masked-LM example of pre-training would hold.
"""

import abc
import itertools
import json
import os
import pathlib
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import sentencepiece as spm
import tokenizers as hf_tokenizers

from attention_jax.data import corpus

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SENTENCEPIECE_FILENAME = "spm.model"
VOCAB_FILENAME = "vocab.txt"
TOKENIZER_CONFIG_FILENAME = "tokenizer_config.json"  # beside vocab.txt: `do_lower_case`


class Encoding(NamedTuple):
    """Tokens of a text or of pre-split words, without special tokens.

    Attributes:
      ids: the token ids.
      offsets: each token's [start, end) characters in the text, or within its word for
        `encode_words` (as Hugging Face `tokenizers` gives them). A span covers the token's
        characters only: never the whitespace a SentencePiece `▁` stands for.
      word_ids: the index of each token's word; all 0 for `encode_with_offsets`, whose text is
        one word, so `encode_with_offsets(t) == encode_words([t])`.
    """

    ids: list[int]
    offsets: list[tuple[int, int]]
    word_ids: list[int]


class Tokenizer(abc.ABC):
    """The interface BERT code uses; subclasses provide the pieces and the encoder.

    Attributes:
      path: the file the tokenizer was loaded from.
      files: the files a run copies to be self-contained (`load_tokenizer` on a folder holding
        them gives this tokenizer back): `spm.model`, or `vocab.txt` and, when present,
        `tokenizer_config.json`.
      backend: the library's own tokenizer (`sentencepiece.SentencePieceProcessor` or
        `tokenizers.BertWordPieceTokenizer`), for what this interface leaves out.
      vocab_size: number of ids; ids are 0 .. vocab_size - 1.
      pad_id, unk_id, cls_id, sep_id, mask_id: the special ids.
      word_starts_V: bool array, True where a piece begins a word. Continuation pieces (WordPiece
        `##ing`, SentencePiece pieces without the `▁` word-boundary mark) are False.
    """

    def __init__(
        self,
        path,
        pieces: Sequence[str],
        word_starts_V: np.ndarray,
        files: Sequence[pathlib.Path],
    ):
        self.path = str(path)
        self.files = list(files)
        self._pieces = list(pieces)
        self._ids = {piece: i for i, piece in enumerate(self._pieces)}
        self.vocab_size = len(self._pieces)
        self.word_starts_V = np.asarray(word_starts_V, dtype=bool)
        missing = [t for t in SPECIAL_TOKENS if t not in self._ids]
        if missing:
            raise ValueError(f"tokenizer {path} lacks special tokens {', '.join(missing)}")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            self._ids[t] for t in SPECIAL_TOKENS
        )

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ids of the pieces of `text`, without [CLS]/[SEP]."""

    @abc.abstractmethod
    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` for many texts at once, by the library's batched (multithreaded) encoder."""

    @abc.abstractmethod
    def encode_with_offsets(self, text: str) -> Encoding:
        """`encode(text)` with each token's [start, end) characters in `text`."""

    @abc.abstractmethod
    def encode_words(self, words: Sequence[str]) -> Encoding:
        """Tokens of pre-split words: offsets within each word, word_ids the word's index."""

    @abc.abstractmethod
    def _decode(self, ids: list[int]) -> str:
        """Text of `ids` by the underlying library."""

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; padding is dropped, other special tokens are kept as `[CLS]` etc."""
        return self._decode([int(i) for i in ids if int(i) != self.pad_id])

    def id_to_token(self, token_id: int) -> str:
        return self._pieces[int(token_id)]

    def token_to_id(self, token: str) -> int:
        """The id of a piece; pieces not in the vocabulary map to `unk_id`."""
        return self._ids.get(token, self.unk_id)

    def __repr__(self):
        return f"{type(self).__name__}({self.path!r}, vocab_size={self.vocab_size})"


def _require_file(path, what: str) -> pathlib.Path:
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {path} not found")
    return path


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model (`spm.model`), e.g. one made by `train_sentencepiece`.

    A piece begins a word when it carries SentencePiece's `▁` word-boundary mark or starts with
    a character that is not a letter or digit: special tokens, and punctuation (so `’` in
    `earth’s` is masked apart from `earth`, as WordPiece makes punctuation a word of its own).
    """

    def __init__(self, path):
        path = _require_file(path, "SentencePiece model")
        self.backend = spm.SentencePieceProcessor()
        try:
            self.backend.Load(str(path))
        except (OSError, RuntimeError):
            raise ValueError(f"{path} is not a SentencePiece model") from None
        pieces = [self.backend.IdToPiece(i) for i in range(self.backend.GetPieceSize())]
        starts = [piece.startswith("▁") or not piece[0].isalnum() for piece in pieces]
        super().__init__(path, pieces, starts, [path])
        self._space_id = self._ids.get("▁")
        self._typed_ids = {self.cls_id, self.sep_id, self.mask_id}

    def _keep(self, ids: list[int]) -> list[bool]:
        """False for a bare "▁" before a typed [CLS]/[SEP]/[MASK]: SentencePiece gives the
        space before the symbol a piece of its own, a position pre-training never shows."""
        following = [*ids[1:], None]
        return [
            not (i == self._space_id and j in self._typed_ids)
            for i, j in zip(ids, following, strict=False)  # ids may be empty
        ]

    def _without_spaces(self, ids: list[int]) -> list[int]:
        return list(itertools.compress(ids, self._keep(ids)))

    def encode(self, text: str) -> list[int]:
        return self._without_spaces(self.backend.Encode(text))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        batch = self.backend.Encode(list(texts), num_threads=min(os.cpu_count() or 1, 16))
        return [self._without_spaces(ids) for ids in batch]

    def _ids_and_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        pieces = self.backend.encode(text, return_type="proto").pieces
        # SentencePiece reports UTF-8 byte offsets; count the characters that end before.
        char_ends = np.cumsum([len(ch.encode()) for ch in text])
        begins = np.searchsorted(char_ends, [p.begin for p in pieces], side="right")
        ends = np.searchsorted(char_ends, [p.end for p in pieces], side="right")
        # A piece's span starts at the whitespace its "▁" stands for; Hugging Face spans cover
        # the characters only, so answers sliced from them have no leading space.
        offsets = [
            (e - len(text[b:e].lstrip()), e)
            for b, e in zip(begins.tolist(), ends.tolist(), strict=True)
        ]
        keep = self._keep([p.id for p in pieces])
        return [p.id for p in itertools.compress(pieces, keep)], list(
            itertools.compress(offsets, keep)
        )

    def encode_with_offsets(self, text: str) -> Encoding:
        ids, offsets = self._ids_and_offsets(text)
        return Encoding(ids, offsets, [0] * len(ids))

    def encode_words(self, words: Sequence[str]) -> Encoding:
        ids, offsets, word_ids = [], [], []
        for word, text in enumerate(words):
            word_pieces, word_offsets = self._ids_and_offsets(text)
            ids += word_pieces
            offsets += word_offsets
            word_ids += [word] * len(word_pieces)
        return Encoding(ids, offsets, word_ids)

    def _decode(self, ids: list[int]) -> str:
        return self.backend.Decode(ids)


class WordPieceTokenizer(Tokenizer):
    """A BERT `vocab.txt` through Hugging Face `tokenizers`' `BertWordPieceTokenizer`.

    Args:
      vocab_path: the checkpoint's `vocab.txt`.
      lowercase: lower-case and strip accents (uncased models). None reads `do_lower_case` from a
        `tokenizer_config.json` next to the vocabulary, else assumes an uncased model.
    """

    def __init__(self, vocab_path, lowercase: bool | None = None):
        vocab_path = _require_file(vocab_path, "WordPiece vocabulary")
        config_path = vocab_path.with_name(TOKENIZER_CONFIG_FILENAME)
        if lowercase is None:
            try:
                config = json.loads(config_path.read_text()) if config_path.is_file() else {}
                lowercase = bool(config.get("do_lower_case", True))
            except (ValueError, AttributeError) as error:  # not JSON, or not a JSON object
                raise ValueError(f"{config_path}: not a tokenizer config ({error})") from None
        self.lowercase = lowercase
        try:
            self.backend = hf_tokenizers.BertWordPieceTokenizer(
                str(vocab_path), lowercase=lowercase
            )
        except Exception as e:  # the Rust library raises its own exception type
            raise ValueError(f"{vocab_path} is not a WordPiece vocabulary: {e}") from None
        vocab = self.backend.get_vocab()
        pieces = [""] * len(vocab)
        for piece, i in vocab.items():
            pieces[i] = piece
        files = [vocab_path, *([config_path] if config_path.is_file() else [])]
        super().__init__(vocab_path, pieces, [not p.startswith("##") for p in pieces], files)

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        encodings = self.backend.encode_batch(list(texts), add_special_tokens=False)
        return [e.ids for e in encodings]

    def encode_with_offsets(self, text: str) -> Encoding:
        encoding = self.backend.encode(text, add_special_tokens=False)
        return Encoding(encoding.ids, encoding.offsets, [0] * len(encoding.ids))

    def encode_words(self, words: Sequence[str]) -> Encoding:
        encoding = self.backend.encode(list(words), is_pretokenized=True, add_special_tokens=False)
        return Encoding(encoding.ids, encoding.offsets, encoding.word_ids)

    def _decode(self, ids: list[int]) -> str:
        return self.backend.decode(ids, skip_special_tokens=False)


def load_tokenizer(path) -> Tokenizer:
    """The tokenizer of a file or of a folder holding one.

    A `.model` file is a `SentencePieceTokenizer`, another file a `WordPieceTokenizer`
    (vocab.txt). A folder gives a `WordPieceTokenizer` for its `vocab.txt` (cased or not as
    `tokenizer_config.json` beside it says), else a `SentencePieceTokenizer` for its `spm.model`.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        if (path / VOCAB_FILENAME).is_file():
            return WordPieceTokenizer(path / VOCAB_FILENAME)
        if (path / SENTENCEPIECE_FILENAME).is_file():
            return SentencePieceTokenizer(path / SENTENCEPIECE_FILENAME)
        raise ValueError(
            f"tokenizer folder {path} has neither {VOCAB_FILENAME} nor {SENTENCEPIECE_FILENAME}"
        )
    if path.suffix == ".model":
        return SentencePieceTokenizer(path)
    return WordPieceTokenizer(path)


def train_sentencepiece(
    files: Iterable,
    model_dir,
    vocab_size: int,
    *,
    lowercase: bool = True,
    model_type: str = "bpe",
    character_coverage: float = 0.9995,
    input_sentence_size: int = 1_000_000,
    seed: int = 0,
) -> SentencePieceTokenizer:
    """Trains a SentencePiece model on corpus files; writes `model_dir/spm.model` (and `spm.vocab`).

    Ids 0-4 are `[PAD]`, `[UNK]`, `[CLS]`, `[SEP]`, `[MASK]`. Training is deterministic for a seed.
    `vocab_size` is an upper bound: a corpus too small for it gives a smaller vocabulary.

    Args:
      files: `.txt` / `.txt.gz` files, one sentence per line (blank lines are skipped).
      model_dir: folder for the model, created if missing.
      vocab_size: the number of pieces, special tokens included.
      lowercase: case-fold the text (an uncased model, google-research/bert's default).
      model_type: "bpe" (a few seconds for 8k pieces on 1 M words) or "unigram" (slower).
      character_coverage: fraction of characters covered by pieces; the rest map to [UNK].
      input_sentence_size: train on at most this many lines, sampled from the corpus.
      seed: seed of that sampling.
    """
    files = list(files)
    sentences = (line for path in files for line in corpus.read_lines(path) if line)
    first = next(sentences, None)
    if first is None:
        raise ValueError(f"no text to train SentencePiece on: {len(files)} file(s), all empty")
    model_dir = pathlib.Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    prefix = model_dir / pathlib.Path(SENTENCEPIECE_FILENAME).stem
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.Train(
            sentence_iterator=itertools.chain([first], sentences),
            model_prefix=str(prefix),
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
            input_sentence_size=input_sentence_size,
            shuffle_input_sentence=True,
            pad_id=0,
            pad_piece="[PAD]",
            unk_id=1,
            unk_piece="[UNK]",
            bos_id=-1,
            eos_id=-1,
            user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"],
            hard_vocab_limit=False,
            num_threads=min(os.cpu_count() or 1, 16),
            minloglevel=2,
        )
    except RuntimeError as e:
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ValueError(f"SentencePiece training failed: {reason}") from None
    return SentencePieceTokenizer(prefix.with_suffix(".model"))
