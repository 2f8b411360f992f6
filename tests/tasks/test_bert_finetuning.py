"""BERT fine-tuning tasks: each loss against NumPy float64, dynamic padding (cut batches give
the same losses and outputs as whole features), `predict` over padded batches, resuming training
batches from a checkpoint, and `prepare_classification`'s validation splits and one-line errors.

B batch, T length, L cut length, C labels, Z rows.
"""

import itertools
import shutil

import jax
import ml_collections
import numpy as np
import pytest

from attention_jax import training
from attention_jax.data.tokenizers import WordPieceTokenizer
from attention_jax.models import bert
from attention_jax.tasks import bert_finetuning

ENCODER = bert.BertConfig(
    vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32
)
WORDS = "a gorgeous witty seductive movie the plot is nothing but dull clichés".split()
SST_ROWS = [
    ("1", "a gorgeous witty seductive movie"),
    ("1", "gorgeous witty seductive movie"),
    ("1", "witty"),
    ("0", "the plot is nothing but dull clichés"),
    ("0", "nothing but dull clichés"),
    ("0", "dull"),
    ("1", "a witty movie"),
    ("0", "the dull plot"),
]


def nll_float64(logits, labels):
    logits = np.asarray(logits, np.float64)
    top = logits.max(-1, keepdims=True)
    log_z = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
    return log_z - np.take_along_axis(logits, labels[..., None], -1)[..., 0]


def make_batch(seed, B=4, T=6, C=3):
    rng = np.random.default_rng(seed)
    input_mask = (np.arange(T)[None] < rng.integers(2, T + 1, (B, 1))).astype(np.int32)
    return {
        "input_ids": rng.integers(1, ENCODER.vocab_size, (B, T)) * input_mask,
        "segment_ids": np.zeros((B, T), np.int32),
        "input_mask": input_mask,
        "weight": np.array([1.0, 1.0, 1.0, 0.0], np.float32),  # a padding row
        "label": rng.integers(0, C, B),
        "start_positions": rng.integers(0, T, B),
        "end_positions": rng.integers(0, T, B),
        "label_ids": np.where(rng.random((B, T)) < 0.3, -100, rng.integers(0, C, (B, T))),
        "label_weights": input_mask.astype(np.float32),
    }


def make_task(name, num_labels=3):
    return bert_finetuning.create(name, ENCODER, num_labels, training.default_config())


@pytest.fixture(scope="module")
def batch():
    return make_batch(0)


def init(task, batch):
    return jax.jit(task.model.init)(jax.random.key(1), *task.inputs(batch))["params"]


def test_classification_loss_is_the_mean_over_weighted_rows(batch):
    task = make_task("classification")
    params = init(task, batch)
    logits_BC = np.asarray(task.apply(params, batch))
    nll_B = nll_float64(logits_BC, batch["label"])
    w = batch["weight"]
    for wrap in (jax.jit, lambda f: f):
        loss, metrics = wrap(lambda p, b: task.loss(p, b, None, train=False))(params, batch)
        np.testing.assert_allclose(loss, (nll_B * w).sum() / w.sum(), rtol=1e-5)
        correct = ((logits_BC.argmax(-1) == batch["label"]) * w).sum()
        np.testing.assert_allclose(metrics["accuracy"], (correct, w.sum()), rtol=1e-6)


def test_span_loss_averages_start_and_end(batch):
    task = make_task("squad", num_labels=2)
    params = init(task, batch)
    start_BT, end_BT = (np.asarray(x) for x in task.apply(params, batch))
    w = batch["weight"]
    start = (nll_float64(start_BT, batch["start_positions"]) * w).sum()
    end = (nll_float64(end_BT, batch["end_positions"]) * w).sum()
    loss, metrics = jax.jit(lambda p, b: task.loss(p, b, None, train=False))(params, batch)
    np.testing.assert_allclose(loss, (start + end) / (2 * w.sum()), rtol=1e-5)
    assert set(metrics) == {"start_accuracy", "end_accuracy"}


def test_tagging_loss_skips_ignored_tokens_and_padding_rows(batch):
    task = make_task("ner")
    params = init(task, batch)
    logits_BTC = np.asarray(task.apply(params, batch))
    labels_BT = batch["label_ids"]
    w_BT = batch["label_weights"] * batch["weight"][:, None] * (labels_BT != -100)
    nll_BT = nll_float64(logits_BTC, np.maximum(labels_BT, 0))
    batch = {**batch, "label_weights": batch["label_weights"] * (labels_BT != -100)}
    loss, metrics = jax.jit(lambda p, b: task.loss(p, b, None, train=False))(params, batch)
    np.testing.assert_allclose(loss, (nll_BT * w_BT).sum() / w_BT.sum(), rtol=1e-5)
    np.testing.assert_allclose(metrics["token_accuracy"][1], w_BT.sum())


def test_dropout_draws_from_the_rng_only_when_training(batch):
    task = make_task("classification")
    params = init(task, batch)
    losses = [
        float(task.loss(params, batch, jax.random.key(k), train=train)[0])
        for k, train in ((0, True), (1, True), (0, False), (1, False))
    ]
    assert losses[0] != losses[1] and losses[2] == losses[3]


def make_features(Z=11, T=16, bucket=4):
    """Z rows of random lengths, at most T - bucket (so cutting removes padding), with "row"
    naming each; the task's loss and inputs ignore "row"."""
    rows = [make_batch(seed, B=1, T=T - bucket) for seed in range(Z)]
    features = {
        k: np.pad(np.concatenate([r[k] for r in rows]), [(0, 0), (0, bucket)])
        if rows[0][k].ndim > 1
        else np.concatenate([r[k] for r in rows])
        for k in rows[0]
    }
    return {**features, "weight": np.ones(Z, np.float32), "row": np.arange(Z)}


@pytest.mark.parametrize("name, bucket", [("classification", 4), ("ner", 4), ("ner", 0)])
def test_predict_covers_every_row_once_and_cutting_padding_changes_no_output(name, bucket):
    task = make_task(name)
    features = make_features()
    params = init(task, features)
    predicted = task.predict(params, features, batch_size=4, bucket=bucket)
    expected = np.asarray(task.apply(params, features))  # all rows at once, uncut
    assert predicted.shape == expected.shape
    if task.per_token:  # the cut positions come back as zeros
        real_ZT = features["input_mask"].astype(bool)
        predicted, expected = predicted[real_ZT], expected[real_ZT]
    np.testing.assert_allclose(predicted, expected, atol=1e-5)


@pytest.mark.parametrize("name", ["classification", "ner"])
def test_cut_training_batches_give_the_loss_of_whole_features(name):
    task = make_task(name)
    features = make_features(Z=24)
    params = init(task, features)
    lengths = set()
    for batch in itertools.islice(task.train_batches(features, 4, seed=0, bucket=4), 6):
        L = batch["input_ids"].shape[1]
        assert L % 4 == 0 and L - 4 < batch["input_mask"].sum(1).max() <= L
        lengths.add(L)
        whole = {k: v[batch["row"]] for k, v in features.items()}
        loss, metrics = task.loss(params, batch, None, train=False)
        whole_loss, whole_metrics = task.loss(params, whole, None, train=False)
        np.testing.assert_allclose(loss, whole_loss, rtol=1e-5)
        np.testing.assert_allclose(jax.tree.leaves(metrics), jax.tree.leaves(whole_metrics))
    assert len(lengths) > 1 and max(lengths) < 16


def test_squad_windows_and_bucket_0_keep_max_seq_length():
    features = make_features(Z=8)
    for name, bucket in (("squad", 4), ("classification", 0)):
        task = make_task(name, num_labels=2)
        batch = next(task.train_batches(features, 4, seed=0, bucket=bucket))
        assert batch["input_ids"].shape == (4, 16)
        for batch in task.eval_batches(features, 4, bucket=bucket):
            assert batch["input_ids"].shape == (4, 16)


def test_training_resumes_the_cut_batches_from_a_checkpoint(tmp_path):
    """Four steps with checkpoints at 2 and 4; resumed from the one at 2, the same parameters."""
    task = make_task("classification")
    features = make_features(Z=40)  # bucket 12: every batch is cut to 12 of 16, one compile
    config = training.default_config()
    config.update(
        workdir=str(tmp_path / "straight"),
        batch_size=4,
        num_train_steps=4,
        warmup_steps=0,
        checkpoint_every_steps=2,
        progress_bar=False,
    )

    def run():
        batches = task.train_batches(features, 4, seed=1, bucket=12)
        return jax.tree.leaves(training.train(config, task, batches).params)

    expected = run()
    config.workdir = str(tmp_path / "resumed")
    shutil.copytree(tmp_path / "straight", config.workdir)
    shutil.rmtree(tmp_path / "resumed/checkpoints/4")
    for got, want in zip(run(), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_create_sets_labels_overrides_and_the_training_dtype():
    train_config = training.default_config()
    train_config.dtype = "bfloat16"
    task = bert_finetuning.create(
        "ner", ENCODER, 7, train_config, ml_collections.ConfigDict({"hidden_dropout_rate": 0.3})
    )
    assert isinstance(task, bert_finetuning.Tagging)
    config = task.model.config
    assert (config.num_labels, config.dtype, config.hidden_dropout_rate) == (7, "bfloat16", 0.3)
    assert config.param_dtype == "float32"
    with pytest.raises(ValueError, match="task 'qa' is not one of"):
        bert_finetuning.create("qa", ENCODER, 2, train_config)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return WordPieceTokenizer(vocab, lowercase=True)


def data_config(tmp_path, **fields):
    tsv = tmp_path / "train.tsv"
    tsv.write_text("label\tsentence\n" + "".join(f"{y}\t{x}\n" for y, x in SST_ROWS))
    d = ml_collections.ConfigDict(
        dict(
            train_file=str(tsv),
            eval_file=None,
            text_columns=("sentence",),
            label_column="label",
            labels=("0", "1"),
            validation_size=2,
            split="sentence",
            seed=0,
            max_seq_length=12,
        )
    )
    d.update(fields)
    return d


def test_sentence_split_holds_out_sentences_and_scores_them(tokenizer, tmp_path):
    data = bert_finetuning.prepare_classification(data_config(tmp_path), tokenizer)
    assert data.num_labels == 2 and "2 whole sentences" in data.info["validation"]
    num_train, num_eval = len(data.train["weight"]), len(data.eval_inputs["weight"])
    assert num_eval == 2 and num_train + num_eval < len(SST_ROWS)  # phrases inside dropped
    assert (
        set(data.train)
        == set(data.eval_inputs)
        == {*bert_finetuning.MODEL_INPUTS, "label", "weight"}
    )
    perfect = np.eye(2)[data.eval_inputs["label"]]
    assert data.score(perfect) == {"accuracy": 1.0, "f1": 1.0}
    assert data.score(1.0 - perfect)["accuracy"] == 0.0


def test_row_split_and_an_eval_file(tokenizer, tmp_path):
    rows = bert_finetuning.prepare_classification(data_config(tmp_path, split="row"), tokenizer)
    assert (
        len(rows.train["weight"]) == len(SST_ROWS) - 2 and "phrase leak" in rows.info["validation"]
    )
    config = data_config(tmp_path)
    config.eval_file = config.train_file
    full = bert_finetuning.prepare_classification(config, tokenizer)
    assert len(full.train["weight"]) == len(full.eval_inputs["weight"]) == len(SST_ROWS)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"split": "random"}, "data.split must be 'sentence' or 'row', got 'random'"),
        ({"train_file": None}, "data.train_file is not set: the classification task needs"),
        ({"train_file": "missing.tsv"}, "data.train_file missing.tsv does not exist"),
        ({"eval_file": "missing.tsv"}, "data.eval_file missing.tsv does not exist"),
    ],
)
def test_bad_data_settings_are_one_line_errors(tokenizer, tmp_path, fields, message):
    with pytest.raises(ValueError, match=message):
        bert_finetuning.prepare_classification(data_config(tmp_path, **fields), tokenizer)


@pytest.mark.parametrize("name", ["squad", "ner"])
def test_squad_and_ner_need_both_files(tokenizer, name):
    d = ml_collections.ConfigDict({"train_file": __file__, "eval_file": None, "tag_column": -1})
    with pytest.raises(ValueError, match=f"data.eval_file is not set: the {name} task needs"):
        bert_finetuning.PREPARE[name](d, tokenizer)
