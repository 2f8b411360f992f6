"""Retrieval data: the pydocs and DPR JSON readers, the split by document, the BERT inputs of
questions and passages, the collection and its relevant passages, and folders of text.

Z rows, S passage length.
"""

import gzip
import json
import pathlib

import numpy as np
import pytest

from attention_jax.data import retrieval
from attention_jax.data.tokenizers import WordPieceTokenizer

VOCAB = "[PAD] [UNK] [CLS] [SEP] [MASK] pickle class module socket open file".split()


@pytest.fixture
def tokenizer(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return WordPieceTokenizer(tmp_path / "vocab.txt")


def _write_pydocs(path, rows):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


def test_pydocs_queries_are_title_paths_split_by_document(tmp_path):
    rows = [
        {"doc": f"library/m{d}.rst.txt", "title": f"T{s}", "is_question": False, "text": f"b{d}{s}"}
        for d in range(10)
        for s in range(d % 3 + 1)
    ]
    _write_pydocs(tmp_path / "s.jsonl.gz", rows)
    examples = retrieval.read_pydocs(tmp_path / "s.jsonl.gz")
    assert examples[0] == retrieval.Example(
        "library/m0 > T0", [retrieval.Passage("", "b00")], [], [], "library/m0.rst.txt"
    )
    kept, held = retrieval.split_by_group(examples, 0.3, seed=0)
    assert len({e.group for e in held}) == 3 and len(kept) + len(held) == len(examples)
    assert not {e.group for e in kept} & {e.group for e in held}
    assert retrieval.split_by_group(examples, 0.3, seed=0) == (kept, held)
    assert retrieval.split_by_group(examples, 0.3, seed=1) != (kept, held)
    with pytest.raises(ValueError, match="holds none or all"):
        retrieval.split_by_group(examples, 0.01, seed=0)
    with pytest.raises(ValueError, match="not found"):
        retrieval.read_pydocs(tmp_path / "missing.jsonl.gz")


def test_real_pydocs_split_shares_no_document():
    path = pathlib.Path(retrieval.PYDOCS)
    if not path.is_file():
        pytest.skip("../shared/data/pydocs is not here")
    examples = retrieval.read_pydocs(path)
    assert len(examples) == 3593
    train, held = retrieval.split_by_group(examples, 0.2, seed=0)
    assert not {e.group for e in train} & {e.group for e in held}


def test_dpr_json(tmp_path):
    rows = [
        {
            "question": "open a socket",
            "answers": ["socket"],
            "positive_ctxs": [{"title": "socket", "text": "open file", "score": 1}],
            "negative_ctxs": [{"title": "pickle", "text": "pickle class"}],
            "hard_negative_ctxs": [{"title": "module", "text": "open module"}],
        },
        {"question": "no positive", "answers": [], "positive_ctxs": []},
    ]
    (tmp_path / "train.json").write_text(json.dumps(rows))
    (example,) = retrieval.read_dpr_json(tmp_path / "train.json")
    assert example.positives == [retrieval.Passage("socket", "open file")]
    assert example.hard_negatives == [retrieval.Passage("module", "open module")]
    passages = retrieval.collection([[example]])
    assert passages == [example.positives[0], *example.negatives, *example.hard_negatives]
    assert retrieval.relevant([example], passages) == [{0}]
    (tmp_path / "bad.json").write_text(json.dumps([{"answers": []}]))
    with pytest.raises(ValueError, match="not a DPR JSON file"):
        retrieval.read_dpr_json(tmp_path / "bad.json")


def test_features_are_cls_title_sep_text_sep(tokenizer):
    passages = [retrieval.Passage("socket", "open file"), retrieval.Passage("", "pickle " * 9)]
    features = retrieval.passage_features(passages, tokenizer, max_length=6)
    ids = {token: i for i, token in enumerate(VOCAB)}
    expected_ZS = np.array(
        [
            [ids[t] for t in "[CLS] socket [SEP] open file [SEP]".split()],
            [ids[t] for t in "[CLS] pickle pickle pickle pickle [SEP]".split()],  # cut at the end
        ]
    )
    np.testing.assert_array_equal(features["input_ids"], expected_ZS)
    np.testing.assert_array_equal(features["input_mask"], np.ones((2, 6)))
    questions = retrieval.question_features(["pickle class"], tokenizer, max_length=6)
    np.testing.assert_array_equal(questions["input_mask"], [[1, 1, 1, 1, 0, 0]])


def test_read_folder_cuts_files_into_passages(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.md").write_text(" ".join(f"w{i}" for i in range(7)))
    (tmp_path / "b.txt").write_text("x y")
    (tmp_path / "c.bin").write_text("ignored")
    passages = retrieval.read_folder(tmp_path, words=3)
    assert passages == [
        retrieval.Passage("b.txt", "x y"),
        retrieval.Passage("sub/a.md", "w0 w1 w2"),
        retrieval.Passage("sub/a.md", "w3 w4 w5"),
        retrieval.Passage("sub/a.md", "w6"),
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no text"):
        retrieval.read_folder(tmp_path / "empty")
