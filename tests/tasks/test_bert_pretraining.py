"""BERT pre-training task: the loss against NumPy float64, the task's loss against the model's
outputs, attention weights for every layer, the unigram baseline and `create`.

B batch, T length, P masked predictions, V vocabulary, N heads.
"""

import jax
import numpy as np
import pytest

from attention_jax import training
from attention_jax.tasks import bert_pretraining
from attention_jax.tasks.bert_pretraining import pretraining_loss


def test_pretraining_loss_matches_a_numpy_reference():
    rng = np.random.default_rng(7)
    B, P, V = 4, 5, 13
    mlm_logits_BPV = rng.normal(size=(B, P, V)).astype(np.float32)
    nsp_logits_B2 = rng.normal(size=(B, 2)).astype(np.float32)
    batch = {
        "masked_lm_ids": rng.integers(0, V, (B, P)),
        "masked_lm_weights": (rng.random((B, P)) < 0.7).astype(np.float32),
        "next_sentence_labels": rng.integers(0, 2, (B, 1)),
    }
    batch["masked_lm_ids"][0, 0] = mlm_logits_BPV[0, 0].argmax()  # at least one hit
    batch["masked_lm_weights"][0, 0] = 1.0

    def reference_nll(logits, labels):
        logits = logits.astype(np.float64)
        log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        return log_z - np.take_along_axis(logits, labels[..., None], -1)[..., 0]

    w = batch["masked_lm_weights"].astype(np.float64)
    mlm_sum = (reference_nll(mlm_logits_BPV, batch["masked_lm_ids"]) * w).sum()
    labels = batch["next_sentence_labels"][:, 0]
    nsp_sum = reference_nll(nsp_logits_B2, labels).sum()
    expected = {
        "mlm_loss": (mlm_sum, w.sum()),
        "mlm_accuracy": (
            ((mlm_logits_BPV.argmax(-1) == batch["masked_lm_ids"]) * w).sum(),
            w.sum(),
        ),
        "nsp_loss": (nsp_sum, B),
        "nsp_accuracy": ((nsp_logits_B2.argmax(-1) == labels).sum(), B),
    }
    for wrap in (jax.jit, lambda f: f):
        loss, metrics = wrap(pretraining_loss)(mlm_logits_BPV, nsp_logits_B2, batch)
        np.testing.assert_allclose(loss, mlm_sum / w.sum() + nsp_sum / B, rtol=1e-5)
        assert metrics.keys() == expected.keys()
        for name, (total, count) in expected.items():
            np.testing.assert_allclose(metrics[name], (total, count), rtol=1e-5, err_msg=name)


def make_batch(seed, B=2, T=9, P=3, V=40):
    rng = np.random.default_rng(seed)
    input_mask = (np.arange(T)[None] < np.array([[T], [T - 3]])).astype(np.int32)
    return {
        "input_ids": rng.integers(5, V, (B, T)) * input_mask,
        "segment_ids": (np.arange(T)[None] >= 4).astype(np.int32) * input_mask,
        "input_mask": input_mask,
        "masked_lm_positions": np.sort(rng.choice(np.arange(1, T - 3), (B, P)), axis=1),
        "masked_lm_ids": rng.integers(0, V, (B, P)),
        "masked_lm_weights": np.ones((B, P), np.float32),
        "next_sentence_labels": rng.integers(0, 2, (B, 1)),
    }


@pytest.fixture(scope="module")
def task_and_params():
    task = bert_pretraining.create(
        "tiny", 40, training.default_config(), {"hidden_size": 16, "intermediate_size": 32}
    )
    params = jax.jit(task.model.init)(jax.random.key(0), *task.inputs(make_batch(0)))["params"]
    return task, params


def test_task_loss_is_the_pretraining_loss_of_the_models_outputs(task_and_params):
    task, params = task_and_params
    batch = make_batch(1)
    expected = pretraining_loss(*task.model.apply({"params": params}, *task.inputs(batch)), batch)
    loss, metrics = jax.jit(lambda p, b: task.loss(p, b, None, train=False))(params, batch)
    np.testing.assert_allclose(loss, expected[0], rtol=1e-6)
    assert metrics.keys() == expected[1].keys()


def test_attention_weights_of_every_layer_in_order(task_and_params):
    task, params = task_and_params
    batch = make_batch(2)
    weights = task.attention_weights(params, batch)
    assert list(weights) == ["bert/layers_0/attention", "bert/layers_1/attention"]
    for weights_BNTS in weights.values():
        assert weights_BNTS.shape == (2, 2, 9, 9)  # tiny: 2 heads
        np.testing.assert_allclose(weights_BNTS.sum(-1), 1.0, atol=1e-5)
        assert np.all(np.asarray(weights_BNTS)[1, :, :, -3:] == 0.0)  # padded keys


def test_unigram_baseline_predicts_the_most_frequent_masked_token():
    def source(ids):
        return [
            {"masked_lm_ids": np.array(row), "masked_lm_weights": np.array([1.0, 1.0, 0.0])}
            for row in ids
        ]

    train = source([[3, 3, 9], [3, 4, 9]])  # 3 is most frequent among weighted slots
    evaluation = source([[3, 3, 5], [6, 7, 3]])  # 2 of the 4 weighted slots are 3
    assert bert_pretraining.unigram_baseline(train, evaluation) == 0.5


def test_create_uses_the_training_dtype_and_rejects_unknown_sizes():
    train_config = training.default_config()
    train_config.dtype = "bfloat16"
    task = bert_pretraining.create("mini", 100, train_config)
    assert (task.model.config.dtype, task.model.config.num_layers) == ("bfloat16", 4)
    with pytest.raises(ValueError, match="unknown BERT model size 'huge'"):
        bert_pretraining.create("huge", 100, train_config)
