"""Packing documents for the language model: every token a target once, documents apart."""

import ml_collections
import numpy as np
import pytest

from attention_jax.data import language_model as lm_data


def test_packing_keeps_every_target_once_in_its_own_segment():
    rng = np.random.default_rng(0)
    documents = [list(rng.integers(5, 50, n)) for n in (3, 9, 2, 17, 6, 1, 8)]
    T = 8
    packed = lm_data.pack_documents(documents, T)
    assert all(packed[name].shape == packed["inputs"].shape for name in lm_data.FEATURES)
    assert packed["inputs"].shape[1] == T
    # Read the rows back, segment by segment, and re-join each document's pieces in order.
    pieces = []
    for z in range(len(packed["inputs"])):
        segments = packed["segment_ids"][z]
        for segment in range(1, segments.max() + 1):
            where = segments == segment
            assert np.array_equal(packed["positions"][z][where], np.arange(where.sum()))
            pieces.append((packed["inputs"][z][where], packed["targets"][z][where]))
        assert np.all(packed["inputs"][z][segments == 0] == 0)
    rebuilt, i = [], 0
    for document in documents:
        if len(document) < 2:
            continue  # a single token has nothing to predict
        inputs, targets = [], []
        while len(inputs) < len(document) - 1:
            inputs += list(pieces[i][0])
            targets += list(pieces[i][1])
            i += 1
        assert inputs == document[:-1] and targets == document[1:]
        rebuilt.append(document)
    assert i == len(pieces)
    assert int((packed["segment_ids"] > 0).sum()) == sum(len(d) - 1 for d in rebuilt)


def test_a_document_longer_than_a_row_is_cut_into_full_pieces():
    packed = lm_data.pack_documents([list(range(1, 21))], 8)  # 19 targets: 8 + 8 + 3
    np.testing.assert_array_equal(packed["segment_ids"].max(1), [1, 1, 1])
    np.testing.assert_array_equal(packed["inputs"][1], range(9, 17))
    np.testing.assert_array_equal(packed["targets"][2][:3], [18, 19, 20])


@pytest.mark.parametrize(
    "documents, T, message",
    [([[1, 2]], 0, "must be positive"), ([[4], []], 8, "no document has a token to predict")],
)
def test_packing_rejects_bad_input(documents, T, message):
    with pytest.raises(ValueError, match=message):
        lm_data.pack_documents(documents, T)


def test_prepare_frames_documents_and_holds_out_whole_documents(tmp_path):
    corpus = tmp_path / "corpus.txt"
    # Names from two letters, so the held-out chapters use no character unseen in training.
    name = {i: format(i, "04b").replace("0", "x").replace("1", "y") for i in range(12)}
    chapters = [[f"Verse {name[v]} of chapter {name[c]}." for v in range(4)] for c in range(12)]
    corpus.write_text("\n\n".join("\n".join(chapter) for chapter in chapters) + "\n")
    config = ml_collections.ConfigDict(
        dict(
            corpus_dir=str(corpus),
            output_dir=str(tmp_path / "tok"),
            tokenizer="char",
            vocab_size=100,
            lowercase=False,
            eval_fraction=0.25,
            seed=0,
        )
    )
    data = lm_data.prepare(config)
    tok = data.tokenizer
    assert len(data.train) + len(data.eval) == 12 and len(data.eval) == 3
    for ids, text in zip(data.eval, data.eval_texts, strict=True):
        assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id
        assert tok.decode(ids[1:-1]) == text  # characters, spaces kept
    eval_chapters = {text.split()[4] for text in data.eval_texts}
    train_text = " ".join(tok.decode(ids[1:-1]) for ids in data.train)
    assert all(f"chapter {c}" not in train_text for c in eval_chapters)
    assert lm_data.count_words(data.eval_texts) == 3 * 4 * 5


def test_prepare_rejects_an_unknown_tokenizer(tmp_path):
    config = ml_collections.ConfigDict(dict(tokenizer="wordpiece"))
    with pytest.raises(ValueError, match="tokenizer must be"):
        lm_data.prepare(config)
