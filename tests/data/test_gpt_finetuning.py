"""GPT-1's input transformations (section 3.3, figure 1): the exact token layout of each task,
truncation, and refusals."""

import numpy as np
import pytest

from attention_jax.data import gpt_finetuning


class WordTokenizer:
    """Each word is the id given by `VOCAB`; the special ids are the SentencePiece runs'."""

    pad_id, unk_id, cls_id, sep_id, mask_id = 0, 1, 2, 3, 4
    VOCAB = {w: i for i, w in enumerate("a b c d e f g h".split(), start=5)}

    def encode(self, text):
        return [self.VOCAB[w] for w in text.split()]

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]


TOKENIZER = WordTokenizer()
S, D, E = 2, 4, 3  # ⟨s⟩ = [CLS], $ = [MASK], ⟨e⟩ = [SEP]
A, B, C, DD, EE = 5, 6, 7, 8, 9  # the words a … e


def test_classification_is_start_text_extract():
    f = gpt_finetuning.features([("a b c",), ("d",)], np.array([1, 0]), TOKENIZER, max_len=6)
    np.testing.assert_array_equal(f["inputs"], [[S, A, B, C, E, 0], [S, DD, E, 0, 0, 0]])
    np.testing.assert_array_equal(f["segment_ids"], [[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(f["positions"], [[0, 1, 2, 3, 4, 0], [0, 1, 2, 0, 0, 0]])
    np.testing.assert_array_equal(f["label"], [1, 0])
    np.testing.assert_array_equal(f["weight"], [1.0, 1.0])
    np.testing.assert_array_equal(gpt_finetuning.lengths(f), [5, 3])


def test_entailment_is_start_premise_delimiter_hypothesis_extract():
    f = gpt_finetuning.features([("a b", "c")], np.array([2]), TOKENIZER, max_len=7)
    np.testing.assert_array_equal(f["inputs"], [[S, A, B, D, C, E, 0]])
    np.testing.assert_array_equal(f["segment_ids"], [[1, 1, 1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(f["positions"], [[0, 1, 2, 3, 4, 5, 0]])


def test_similarity_packs_both_orders_as_two_segments():
    f = gpt_finetuning.features(
        [("a b", "c")], np.array([0]), TOKENIZER, max_len=13, similarity=True
    )
    np.testing.assert_array_equal(f["inputs"], [[S, A, B, D, C, E, S, C, D, A, B, E, 0]])
    np.testing.assert_array_equal(f["segment_ids"], [[1] * 6 + [2] * 6 + [0]])
    np.testing.assert_array_equal(f["positions"], [[0, 1, 2, 3, 4, 5] * 2 + [0]])


def test_truncation_cuts_text_ends_longer_text_first():
    single = gpt_finetuning.features([("a b c d e",)], np.array([0]), TOKENIZER, max_len=5)
    np.testing.assert_array_equal(single["inputs"], [[S, A, B, C, E]])
    pair = gpt_finetuning.features([("a b c d", "e")], np.array([0]), TOKENIZER, max_len=6)
    np.testing.assert_array_equal(pair["inputs"], [[S, A, B, D, EE, E]])
    both = gpt_finetuning.features(
        [("a b c d", "e")], np.array([0]), TOKENIZER, max_len=12, similarity=True
    )
    np.testing.assert_array_equal(both["inputs"], [[S, A, B, D, EE, E, S, EE, D, A, B, E]])


def test_refusals():
    with pytest.raises(ValueError, match="expected two texts for similarity, got 1"):
        gpt_finetuning.transform([[A]], TOKENIZER, similarity=True)
    with pytest.raises(ValueError, match="expected two texts, got 3"):
        gpt_finetuning.transform([[A], [B], [C]], TOKENIZER)
    with pytest.raises(ValueError, match="leaves no room"):
        gpt_finetuning.features([("a", "b")], np.array([0]), TOKENIZER, max_len=3)
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        gpt_finetuning.features([("a",), ("b",)], np.array([0]), TOKENIZER, max_len=8)
