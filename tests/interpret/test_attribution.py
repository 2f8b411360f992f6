"""Gradient-based attributions over input embeddings (Sundararajan et al. 2017): the embeddings
read and replaced by method interception; gradient × input against central finite differences;
integrated gradients exact on a quadratic and complete on a tiny BERT; source embeddings of the
translation models (gradients vanish at padding)."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from attention_jax import training
from attention_jax.interpret import attribution, bottleneck
from attention_jax.tasks import language_model
from tests.interpret.conftest import bert_batch, translation_batch


def _embedding_function(bert_classifier, seed=0):
    task, params = bert_classifier
    batch = bert_batch(np.random.default_rng(seed))
    x_BTD, score_fn = attribution.embedding_function(
        task, params, batch, attribution.class_probability()
    )
    return task, params, batch, x_BTD, jax.jit(score_fn)


def test_embeddings_are_read_and_replaced_through_the_word_embedding_module(bert_classifier):
    task, params, batch, x_BTD, score_fn = _embedding_function(bert_classifier)
    table = params["bert"]["embeddings"]["word_embeddings"]["embedding"]
    np.testing.assert_array_equal(x_BTD, table[batch["input_ids"]])
    probs = jax.nn.softmax(task.apply(params, batch))[np.arange(3), batch["label"]]
    np.testing.assert_allclose(score_fn(x_BTD), probs, rtol=1e-6)
    noise_BD = jax.random.normal(jax.random.key(0), x_BTD[:, 1].shape)
    moved = score_fn(x_BTD.at[:, 1].add(noise_BD))
    assert np.all(np.abs(moved - probs) > 1e-4)
    with pytest.raises(ValueError, match="no call 0"):
        attribution.module_output(lambda: task.apply(params, batch), "bert/no_such_module")


def test_gradient_times_input_equals_central_finite_differences(bert_classifier):
    """In float64 (but for the float32 softmax) with the five-point stencil, whose error is
    O(ε⁴): the estimate is good to about 1e-6 here."""
    task, params = bert_classifier
    config = dataclasses.replace(task.model.config, dtype="float64", param_dtype="float64")
    with jax.enable_x64(True):
        task64 = type(task)(task.model.clone(config=config))
        params64 = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
        x_BTD, score_fn = _embedding_function((task64, params64), seed=1)[3:]
        got_BT = np.asarray(attribution.gradient_times_input(score_fn, x_BTD))
        eps = 1e-2
        for t in range(x_BTD.shape[1]):
            # d/dε F(x with x_t scaled by 1 + ε) at ε = 0 is Σ_d ∂F/∂x_td · x_td.
            def f(e, t=t):
                return score_fn(x_BTD.at[:, t].multiply(1 + e))

            fd_B = (-f(2 * eps) + 8 * f(eps) - 8 * f(-eps) + f(-2 * eps)) / (12 * eps)
            np.testing.assert_allclose(got_BT[:, t], fd_B, rtol=1e-4, atol=2e-6)
    assert np.abs(got_BT).max() > 1e-3  # the check is not vacuous


def test_integrated_gradients_is_exact_on_a_quadratic():
    rng = np.random.default_rng(2)
    a_D = jnp.asarray(rng.normal(size=4), jnp.float32)
    x, baseline = (jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32) for _ in range(2))

    def score_fn(x_BTD):  # F(x) = Σ_t (a·x_t)²
        return ((x_BTD @ a_D) ** 2).sum(-1)

    # ∂F/∂x_t = 2 (a·x_t) a along x' + αΔ, so IG_t = 2 (a·Δ_t)(a·x'_t + (a·Δ_t) / 2).
    a_delta = (x - baseline) @ a_D
    expected = 2 * a_delta * (baseline @ a_D + a_delta / 2)
    got = attribution.integrated_gradients(score_fn, x, baseline, steps=2)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="steps"):
        attribution.integrated_gradients(score_fn, x, baseline, steps=0)


def test_integrated_gradients_are_complete_on_bert(bert_classifier):
    """Σ_t IG_t = F(x) − F(x') within 1e-4 (probabilities) with 16 Gauss–Legendre points."""
    _, _, batch, x_BTD, score_fn = _embedding_function(bert_classifier, seed=3)
    baseline_BTD = jnp.zeros_like(x_BTD)
    ig_BT = attribution.integrated_gradients(score_fn, x_BTD, baseline_BTD, steps=16)
    difference_B = score_fn(x_BTD) - score_fn(baseline_BTD)
    assert np.all(np.abs(difference_B) > 1e-3)  # the check is not vacuous
    np.testing.assert_allclose(ig_BT.sum(-1), difference_B, atol=1e-4)


@pytest.mark.parametrize("translator", ["transformer", "rnn_bahdanau"], indirect=True)
def test_source_gradients_of_translation_models_vanish_at_padding(translator):
    task, params = translator
    batch = translation_batch(np.random.default_rng(4))
    x_BSD, score_fn = attribution.embedding_function(
        task, params, batch, bottleneck.last_token_loss
    )
    path = attribution.input_embedding_path(task.model)
    table = traverse_util.flatten_dict(params, sep="/")[f"{path}/embedding"]
    np.testing.assert_array_equal(x_BSD, table[batch["inputs"]])  # the source, not the target
    norms_BS = np.asarray(jax.jit(lambda x: attribution.gradient_norms(score_fn, x))(x_BSD))
    real_BS = batch["inputs"] != 0
    assert np.all(norms_BS[~real_BS] == 0) and np.all(norms_BS[real_BS] > 0)


def test_gpt_attributions_are_complete_and_causal():
    """On a tiny GPT the token embeddings are `wte`'s output; IG of the last position's logit
    of its target is complete, and positions after the scored one get exactly zero."""
    task = language_model.create(
        "tiny",
        29,
        training.default_config(),
        dict(num_layers=1, d_model=16, num_heads=2, d_ff=32, dropout_rate=0.0),
    )
    tokens = np.random.default_rng(4).integers(1, 29, (2, 7)).astype(np.int32)
    batch = {"inputs": tokens, "segment_ids": np.ones_like(tokens), "positions": np.arange(7)[None]}
    params = nn.unbox(task.model.init(jax.random.PRNGKey(0), tokens)["params"])

    def logit_at_4(logits_BTV, batch):
        return jax.nn.log_softmax(logits_BTV[:, 4])[jnp.arange(2), batch["inputs"][:, 5]]

    x_BTD, score_fn = attribution.embedding_function(task, params, batch, logit_at_4)
    np.testing.assert_allclose(x_BTD, params["wte"]["embedding"][tokens], rtol=1e-6)
    baseline_BTD = jnp.zeros_like(x_BTD)
    ig_BT = attribution.integrated_gradients(score_fn, x_BTD, baseline_BTD, steps=32)
    difference_B = score_fn(x_BTD) - score_fn(baseline_BTD)
    assert np.all(np.abs(difference_B) > 1e-3)
    np.testing.assert_allclose(ig_BT.sum(-1), difference_B, atol=1e-3)
    assert np.all(np.asarray(ig_BT)[:, 5:] == 0.0)
