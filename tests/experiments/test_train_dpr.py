"""End to end: a three-step run of `experiments/train_dpr.py` on DPR JSON files from a tiny
random BERT folder, then `experiments/retrieve.py` on its checkpoint; one-line errors."""

import json

import jax
import numpy as np
import pytest

from attention_jax.interop import save_hf_bert
from attention_jax.models import bert
from tests.experiments import scripts

WORDS = "pickle class module socket thread open file read write lock queue list".split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A random 1-layer BERT as a Hugging Face folder (config.json, model.safetensors, vocab)."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    config = bert.BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    ids = np.zeros((1, 4), np.int32)
    params = bert.BertModel(config).init(jax.random.PRNGKey(0), ids)["params"]
    save_hf_bert(config, params, folder)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return folder


@pytest.fixture(scope="module")
def dpr_files(tmp_path_factory):
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("dpr")
    rows = []
    for i in range(12):
        words = list(rng.choice(WORDS, 6))
        rows.append(
            {
                "question": " ".join(words[:2]),
                "answers": [],
                "positive_ctxs": [{"title": f"t{i}", "text": " ".join(words)}],
                "hard_negative_ctxs": [{"title": "x", "text": " ".join(rng.choice(WORDS, 6))}],
            }
        )
    (folder / "train.json").write_text(json.dumps(rows[:8]))
    (folder / "dev.json").write_text(json.dumps(rows[8:]))
    return folder


def test_train_then_retrieve(tiny_bert, dpr_files, tmp_path):
    workdir = tmp_path / "run"
    overrides = {
        "init_from": tiny_bert,
        "data.format": "dpr",
        "data.train_file": dpr_files / "train.json",
        "data.eval_file": dpr_files / "dev.json",
        "data.max_passage_length": 12,
        "data.max_question_length": 6,
        "eval_batch_size": 8,
        "train.workdir": workdir,
        "train.num_train_steps": 3,
        "train.batch_size": 4,
        "train.log_every_steps": 1,
        "train.progress_bar": False,
    }
    result = scripts.run("experiments/train_dpr.py", overrides)
    assert "| BM25 (bm25s) |" in result.stdout and "| dense, fine-tuned |" in result.stdout
    results = json.loads((workdir / "results.json").read_text())
    assert results["train_steps"] == 3 and results["data"]["hard_negatives"]
    assert results["data"]["passages"] == 24  # 12 positives, 12 hard negatives
    for system, metrics in results["metrics"].items():
        assert set(metrics) == {"top1", "top5", "top20", "top100", "mrr@10"}, system
        assert metrics["top1"] <= metrics["top5"] <= metrics["top20"] <= metrics["top100"] == 100

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("pickle class module " * 3)
    (docs / "b.md").write_text("socket thread lock")
    (docs / "skip.bin").write_text("not text")
    found = scripts.run(
        "experiments/retrieve.py",
        {"workdir": workdir, "folder": docs, "query": "socket lock", "k": 2, "words": 5},
        "--config=experiments/configs/dpr.py:retrieve",
    )
    lines = found.stdout.splitlines()
    assert lines[0] == f"'socket lock': the best 2 of 3 passages in {docs}"
    assert sum(line[:2] in ("1.", "2.") for line in lines) == 2


def test_bad_input_is_one_line_error(tmp_path):
    result = scripts.run(
        "experiments/retrieve.py",
        {"workdir": tmp_path, "folder": tmp_path},
        "--config=experiments/configs/dpr.py:retrieve",
        status=2,
    )
    assert result.stderr.strip().splitlines()[-1] == (
        "retrieve.py: error: query is not set: pass --config.query=..."
    )
