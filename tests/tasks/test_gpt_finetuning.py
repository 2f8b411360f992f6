"""GPT-1 fine-tuning (section 3.2): L3 = L2 + λ · L1 against float64 NumPy from the model's
outputs, the model built from a GPT config, and the SST-2 data with its held-out splits."""

import dataclasses

import jax
import ml_collections
import numpy as np
import pytest

from attention_jax import training
from attention_jax.models import gpt
from attention_jax.tasks import gpt_finetuning
from tests.data.sst import SST_ROWS

GPT_CONFIG = gpt.GPTConfig.tiny(
    29, num_layers=1, d_model=16, num_heads=2, d_ff=32, max_len=16, dropout_rate=0.0
)
# Row 0: one sequence and padding; row 1: two segments; row 2: a padding row (weight 0).
BATCH = {
    "inputs": np.array([[2, 7, 8, 9, 3, 0, 0], [2, 5, 4, 6, 3, 2, 3], [0] * 7], np.int32),
    "segment_ids": np.array([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 2, 2], [0] * 7], np.int32),
    "positions": np.array([[0, 1, 2, 3, 4, 0, 0], [0, 1, 2, 3, 4, 0, 1], [0] * 7], np.int32),
    "label": np.array([1, 0, 1], np.int32),
    "weight": np.array([1.0, 1.0, 0.0], np.float32),
}


def log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def numpy_l3(logits_BC, lm_logits_BTV, batch, lm_coef):
    """Eq. 5: the mean task NLL over real rows plus λ times the mean NLL of every token that
    follows another in its sequence."""
    logp_BC, logp_BTV = log_softmax(logits_BC), log_softmax(lm_logits_BTV)
    rows = [b for b in range(len(batch["weight"])) if batch["weight"][b]]
    l2 = -np.mean([logp_BC[b, batch["label"][b]] for b in rows])
    tokens, segments = batch["inputs"], batch["segment_ids"]
    predicted = [
        logp_BTV[b, t, tokens[b, t + 1]]
        for b in range(len(tokens))
        for t in range(tokens.shape[1] - 1)
        if segments[b, t] and segments[b, t + 1] == segments[b, t]
    ]
    assert len(predicted) == 4 + 4 + 1
    l1 = -np.mean(predicted)
    return l2 + lm_coef * l1, l2, l1


@pytest.mark.parametrize("lm_coef", [0.5, 0.0, 2.0])
def test_loss_is_task_plus_lambda_lm_cross_entropy(lm_coef):
    task = gpt_finetuning.create(GPT_CONFIG, 2, training.default_config(), lm_coef=lm_coef)
    params = task.model.init(jax.random.PRNGKey(0), *task.inputs(BATCH))["params"]
    logits_BC, lm_logits_BTV = task.apply(params, BATCH, return_lm_logits=True)
    expected, l2, l1 = numpy_l3(logits_BC, lm_logits_BTV, BATCH, lm_coef)
    loss, metrics = jax.jit(lambda p, b: task.loss(p, b, None, train=False))(params, BATCH)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["task_nll"][0] / metrics["task_nll"][1], l2, rtol=1e-5)
    np.testing.assert_allclose(metrics["lm_nll"][0] / metrics["lm_nll"][1], l1, rtol=1e-5)
    correct = (np.argmax(logits_BC, -1) == BATCH["label"])[:2].sum()
    np.testing.assert_array_equal(metrics["accuracy"], (correct, 2.0))


def test_create_builds_the_classifier_over_the_gpt_config():
    train_config = training.default_config()
    train_config.dtype = "bfloat16"
    task = gpt_finetuning.create(
        GPT_CONFIG, 5, train_config, overrides={"dropout_rate": 0.1, "max_len": None}
    )
    assert task.lm_coef == 0.5 and isinstance(task.model, gpt.GPTClassifier)
    expected = dict(dataclasses.asdict(GPT_CONFIG), num_labels=5, dropout_rate=0.1)
    assert task.model.config == gpt.GPTClassifierConfig(**{**expected, "dtype": "bfloat16"})
    with pytest.raises(ValueError, match=r"lm_coef \(λ\) must be non-negative, got -0.5"):
        gpt_finetuning.create(GPT_CONFIG, 2, train_config, lm_coef=-0.5)


class WordTokenizer:
    """One id per distinct word, from 5 up; the special ids are the SentencePiece runs'."""

    cls_id, sep_id, mask_id = 2, 3, 4

    def __init__(self):
        self.vocab = {}

    def encode_batch(self, texts):
        return [[self.vocab.setdefault(w, 5 + len(self.vocab)) for w in t.split()] for t in texts]


def data_config(path, tuning):
    return ml_collections.ConfigDict(
        dict(
            train_file=str(path),
            eval_file=None,
            text_columns=("sentence",),
            label_column="label",
            labels=("0", "1"),
            validation_size=2,
            seed=0,
            tuning=tuning,
            max_len=24,
            similarity=False,
        )
    )


def test_prepare_holds_out_sentences_and_a_separate_tuning_split(tmp_path):
    tsv = tmp_path / "train.tsv"
    tsv.write_text("label\tsentence\n" + "".join(f"{y}\t{x}\n" for y, x in SST_ROWS))
    tokenizer = WordTokenizer()
    data = gpt_finetuning.prepare(data_config(tsv, tuning=False), tokenizer)
    tuned = gpt_finetuning.prepare(data_config(tsv, tuning=True), tokenizer)
    words = {i: w for w, i in tokenizer.vocab.items()}

    def texts(features):
        return [" ".join(words[i] for i in row if i >= 5) for row in features["inputs"]]

    validation, tuning = texts(data.eval_inputs), texts(tuned.eval_inputs)
    assert len(validation) == len(tuning) == 2 and not set(validation) & set(tuning)
    for sentence in validation:  # neither tuning nor its training rows saw a validation phrase
        assert not any(f" {row} " in f" {sentence} " for row in texts(tuned.train) + tuning)
        assert not any(f" {row} " in f" {sentence} " for row in texts(data.train))
    assert set(texts(tuned.train)) < set(texts(data.train))
    assert "2 whole sentences" in data.info["validation"] and "tuning" in tuned.info["validation"]
    assert (data.eval_inputs["inputs"][:, 0] == 2).all() and data.num_labels == 2
    labels = {x: int(y) for y, x in SST_ROWS}
    logits_ZC = np.eye(2)[[labels[s] for s in validation]]
    assert data.score(logits_ZC) == {"accuracy": 1.0}
    assert data.score(logits_ZC[:, ::-1]) == {"accuracy": 0.0}
