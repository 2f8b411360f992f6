"""Head masking (Michel et al. 2019): the gate of `MultiHeadAttention` against a float64 NumPy
reference from the layer's own parameters; the masks threaded through BERT and the Transformer;
head importance against per-example gradients; pruning masks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import layers
from attention_jax.interpret import heads
from tests.interpret.conftest import bert_batch, translation_batch


def _reference(p, x_BTD, xi_BN):
    """Σ_h ξ_h softmax(q_h k_hᵀ / √H) v_h W_O^h + b_O, in float64 from the parameters."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    x = np.asarray(x_BTD, np.float64)
    q, k, v = (
        np.einsum("BTD,DNH->BTNH", x, p[name]["kernel"]) + p[name]["bias"]
        for name in ("query", "key", "value")
    )
    logits = np.einsum("BTNH,BSNH->BNTS", q, k) / np.sqrt(q.shape[-1])
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    heads_BTNH = np.einsum("BNTS,BSNH->BTNH", w, v) * np.asarray(xi_BN)[:, None, :, None]
    return np.einsum("BTNH,NHD->BTD", heads_BTNH, p["out"]["kernel"]) + p["out"]["bias"]


def test_a_head_mask_gates_each_heads_output_before_the_projection():
    rng = np.random.default_rng(0)
    x_BTD = jnp.asarray(rng.normal(size=(2, 4, 6)), jnp.float32)
    attention = layers.MultiHeadAttention(num_heads=3)
    variables = nn.unbox(attention.init(jax.random.key(0), x_BTD))
    plain = attention.apply(variables, x_BTD)
    np.testing.assert_array_equal(attention.apply(variables, x_BTD, head_mask=jnp.ones(3)), plain)
    np.testing.assert_allclose(
        plain, _reference(variables["params"], x_BTD, np.ones((2, 3))), atol=1e-5
    )
    for xi in ([1.0, 0.0, 1.0], [[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]], [[0.5, 0.0, 2.0]] * 2):
        xi_BN = np.broadcast_to(np.asarray(xi), (2, 3))
        got = attention.apply(variables, x_BTD, head_mask=jnp.asarray(xi))
        np.testing.assert_allclose(got, _reference(variables["params"], x_BTD, xi_BN), atol=1e-5)
    with pytest.raises(ValueError, match="head_mask"):
        attention.apply(variables, x_BTD, head_mask=jnp.ones(4))


def test_bert_takes_one_mask_per_layer_and_per_row(bert_classifier):
    task, params = bert_classifier
    batch = bert_batch(np.random.default_rng(1))
    plain = task.apply(params, batch)
    np.testing.assert_array_equal(task.apply(params, batch, head_mask=jnp.ones((2, 2))), plain)
    masks_BYN = jnp.asarray([[[1, 0], [1, 1]], [[1, 1], [0, 1]], [[0, 0], [0, 0]]], jnp.float32)
    per_row = task.apply(params, batch, head_mask=masks_BYN)
    for b in range(3):
        alone = task.apply(params, batch, head_mask=masks_BYN[b])
        np.testing.assert_allclose(per_row[b], alone[b], atol=1e-6)
        assert not np.allclose(alone[b], plain[b], atol=1e-4)
    with pytest.raises(ValueError, match="layers"):
        task.apply(params, batch, head_mask=jnp.ones((3, 2)))


@pytest.mark.parametrize("translator", ["transformer"], indirect=True)
def test_a_transformer_without_cross_attention_heads_ignores_the_source(translator):
    task, params = translator
    batch = translation_batch(np.random.default_rng(2))
    plain = task.apply(params, batch)
    Y, N = task.model.config.num_decoder_layers, task.model.config.num_heads
    ones = jnp.ones((Y, N))
    kept = task.apply(
        params, batch, encoder_head_mask=ones, decoder_head_mask=ones, cross_head_mask=ones
    )
    np.testing.assert_array_equal(kept, plain)
    other = {
        **batch,
        "inputs": np.where(batch["inputs"] > 2, 3 + batch["inputs"] % 30, batch["inputs"]),
    }
    blind = [task.apply(params, b, cross_head_mask=jnp.zeros((Y, N))) for b in (batch, other)]
    np.testing.assert_allclose(blind[0], blind[1], atol=1e-6)
    assert not np.allclose(task.apply(params, other), plain, atol=1e-4)
    with pytest.raises(ValueError, match="layers"):
        task.apply(params, batch, encoder_head_mask=jnp.ones((Y + 1, N)))


def test_head_importance_is_the_mean_absolute_gradient_per_example(bert_classifier):
    task, params = bert_classifier
    batch = bert_batch(np.random.default_rng(3))
    batch["weight"] = np.array([1.0, 1.0, 0.0], np.float32)  # the last row is padding
    loss_fn = heads.classification_loss(task, params)
    got = heads.head_importance(loss_fn, [batch], 2, 2)
    gradient = jax.jit(jax.grad(lambda mask_YN, row: loss_fn(row, mask_YN[None])[0][0]))
    rows = [{k: v[b : b + 1] for k, v in batch.items()} for b in range(2)]
    expected = np.mean([np.abs(gradient(jnp.ones((2, 2)), row)) for row in rows], axis=0)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    normalised = heads.normalise_by_layer(got)
    np.testing.assert_allclose(np.linalg.norm(normalised, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(normalised * np.linalg.norm(got, axis=1)[:, None], got, rtol=1e-6)


def test_pruning_removes_the_least_important_heads_first():
    importance = np.array([[0.3, 0.1], [0.2, 0.9]])
    masks = heads.pruning_masks(importance, [0, 1, 3])
    np.testing.assert_array_equal(masks[0], np.ones((2, 2)))
    np.testing.assert_array_equal(masks[1], [[1, 0], [1, 1]])
    np.testing.assert_array_equal(masks[2], [[0, 0], [0, 1]])
    with pytest.raises(ValueError, match="prune"):
        heads.pruning_masks(importance, [5])
    assert heads.prunable([0, 4, 8, 12], [0.85, 0.845, 0.83, 0.84], drop=0.01) == 4
    assert heads.prunable([0, 4], [0.85, 0.85], drop=0.01) == 4


def test_the_masked_predictor_with_every_head_is_predict(bert_classifier):
    task, params = bert_classifier
    features = bert_batch(np.random.default_rng(4), B=5)
    predict = heads.masked_predictor(task, batch_size=2)
    np.testing.assert_allclose(
        predict(params, features, jnp.ones((2, 2))), task.predict(params, features, 2), atol=1e-6
    )
