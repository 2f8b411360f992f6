"""SASE data: the word vocabulary, word2vec / GloVe text files, and length-bucketed batches
that resume exactly and keep every evaluation row once."""

import numpy as np
import pytest

from attention_jax.data import sase


def test_vocabulary_and_word_vectors(tmp_path):
    vocabulary = sase.WordVocabulary.build(["The film , the plot", "a film"], min_count=1)
    assert vocabulary.tokens[:3] == ["[PAD]", "[UNK]", "the"] and vocabulary.vocab_size == 7
    assert vocabulary.encode("THE unseen film") == [2, 1, vocabulary.get("film")]
    vocabulary.save(tmp_path / "words.txt")
    assert sase.WordVocabulary.load(tmp_path / "words.txt").tokens == vocabulary.tokens
    # A word2vec text file: a header line, then `word v_1 … v_M`; case is folded.
    (tmp_path / "vectors.txt").write_text("3 2\nThe 1 2\nfilm 3 4\nzebra 5 6\n")
    vectors_VM, found = sase.read_word_vectors(tmp_path / "vectors.txt", vocabulary)
    assert found == 2 and vectors_VM.shape == (7, 2) and vectors_VM.dtype == np.float32
    np.testing.assert_array_equal(vectors_VM[vocabulary.get("film")], [3, 4])
    np.testing.assert_array_equal(vectors_VM[0], [0, 0])
    with pytest.raises(ValueError, match="do not exist"):
        sase.read_word_vectors(tmp_path / "missing.txt", vocabulary)


def test_batches_are_bucketed_resume_exactly_and_evaluate_every_row_once():
    rng = np.random.default_rng(0)
    rows = [[list(rng.integers(1, 9, rng.integers(1, 20)))] for _ in range(100)]
    labels_Z = rng.integers(0, 2, 100)
    batches = sase.SentenceBatches(rows, labels_Z, 8, seed=3, bucket=8)
    first = [next(batches) for _ in range(20)]  # crosses an epoch (12 batches each)
    assert all(b["tokens"].shape[1] % 8 == 0 and b["weight"].sum() == 8 for b in first)
    state = batches.get_state()
    following = next(batches)
    again = sase.SentenceBatches(rows, labels_Z, 8, seed=3, bucket=8)
    again.set_state(state)
    np.testing.assert_array_equal(next(again)["tokens"], following["tokens"])

    seen = list(sase.SentenceBatches(rows, labels_Z, 32, shuffle=False, bucket=4))
    assert len(seen) == 4 and sum(b["weight"].sum() for b in seen) == 100
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in seen])[:100], labels_Z)
    assert seen[0]["tokens"][0, : len(rows[0][0])].tolist() == rows[0][0]
