"""SASE (Lin et al. 2017): the whole forward pass (embeddings → BiLSTM → A, M → MLP logits) and
the gated sentence-pair encoder against NumPy float64 per unpadded example, jitted and not; a
padded batch equals its rows one by one; frozen embeddings get no gradient.

B batch, S tokens, E = 2U annotation size, R hops, C classes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax.models import sase
from tests.models.test_seq2seq_rnn import reference_direction
from tests.models.test_transformer import random_params

CONFIG = sase.SASEConfig.tiny(
    23, embed_size=6, hidden_size=5, attention_hidden_size=7, hops=3, mlp_hidden_size=9
)
LENGTHS = [6, 4, 1]


def random_tokens(rng, lengths, S):
    tokens_BS = rng.integers(1, CONFIG.vocab_size, size=(len(lengths), S))
    tokens_BS[np.arange(S)[None, :] >= np.asarray(lengths)[:, None]] = 0
    return tokens_BS


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def reference_sentence(p, tokens_S):
    """M_RE and A_RS of one unpadded sentence, in float64, from the paper's equations."""
    x_SM = p["embed"]["embedding"][tokens_S]
    args = [(p["w_x_0"][:, d], p["u_0"][d], p["b_0"][d]) for d in range(2)]
    forward_SU, _ = reference_direction("lstm", x_SM, *args[0])
    backward_SU, _ = reference_direction("lstm", x_SM[::-1], *args[1])
    h_SE = np.concatenate([forward_SU, backward_SU[::-1]], axis=1)
    a_RS = softmax((np.tanh(h_SE @ p["w_s1"]) @ p["w_s2"]).T)  # eq. 6
    return a_RS @ h_SE, a_RS


def reference_mlp(p, features):
    hidden = np.maximum(features @ p["mlp_hidden"]["kernel"] + p["mlp_hidden"]["bias"], 0.0)
    return hidden @ p["logits"]["kernel"] + p["logits"]["bias"]


def float64(params):
    return jax.tree.map(lambda x: np.asarray(x, np.float64), params)


@pytest.mark.parametrize("jit", [False, True])
def test_forward_matches_numpy_per_unpadded_example(jit):
    model = sase.SASE(CONFIG)
    tokens_BS = random_tokens(np.random.default_rng(0), LENGTHS, 6)
    params = random_params(model, tokens_BS, std=0.5)
    apply = lambda p, t: model.apply({"params": p}, t, return_weights=True)  # noqa: E731
    logits_BC, weights_BRS = (jax.jit(apply) if jit else apply)(params, tokens_BS)
    p = float64(params)
    for b, n in enumerate(LENGTHS):
        m_RE, a_RS = reference_sentence(p["encoder"], tokens_BS[b, :n])
        np.testing.assert_allclose(weights_BRS[b, :, :n], a_RS, atol=1e-5, rtol=1e-5)
        assert np.all(np.asarray(weights_BRS[b, :, n:]) == 0.0)
        expected_C = reference_mlp(p, m_RE.reshape(-1))
        np.testing.assert_allclose(logits_BC[b], expected_C, atol=1e-5, rtol=1e-5)


def test_padded_batch_equals_rows_one_by_one():
    model = sase.SASE(CONFIG)
    tokens_BS = random_tokens(np.random.default_rng(1), LENGTHS, 8)
    params = random_params(model, tokens_BS, std=0.5)
    apply = jax.jit(lambda p, t: model.apply({"params": p}, t, return_weights=True))
    logits_BC, weights_BRS = apply(params, tokens_BS)
    for b, n in enumerate(LENGTHS):
        row_logits, row_weights = apply(params, tokens_BS[b : b + 1, :n])
        np.testing.assert_allclose(logits_BC[b], row_logits[0], atol=1e-6, rtol=1e-6)
        np.testing.assert_allclose(weights_BRS[b, :, :n], row_weights[0], atol=1e-6, rtol=1e-6)


def test_sentence_pairs_go_through_one_encoder_and_the_gated_encoder():
    config = sase.SASEConfig.tiny(23, pair=True, hops=3, hidden_size=5, factor_size=4)
    model = sase.SASE(config)
    rng = np.random.default_rng(2)
    premise_BS, hypothesis_BS = random_tokens(rng, LENGTHS, 6), random_tokens(rng, [2, 5, 3], 5)
    params = random_params(model, premise_BS, hypothesis_BS, std=0.5)
    assert params["w_fp"].shape == params["w_fh"].shape == (3, 10, 4)
    assert set(params) == {"encoder", "w_fp", "w_fh", "mlp_hidden", "logits"}  # one encoder
    logits_BC, (a_BRS, a_b_BRS) = jax.jit(
        lambda p, x, y: model.apply({"params": p}, x, y, return_weights=True)
    )(params, premise_BS, hypothesis_BS)
    assert logits_BC.shape == (3, 2) and a_BRS.shape == (3, 3, 6) and a_b_BRS.shape == (3, 3, 5)
    p = float64(params)
    for b, (n, k) in enumerate(zip(LENGTHS, [2, 5, 3], strict=True)):
        m_p_RE, _ = reference_sentence(p["encoder"], premise_BS[b, :n])
        m_h_RE, _ = reference_sentence(p["encoder"], hypothesis_BS[b, :k])
        f_p_RO = np.einsum("re,reo->ro", m_p_RE, p["w_fp"])  # batched_dot(M_p, W_fp)
        f_h_RO = np.einsum("re,reo->ro", m_h_RE, p["w_fh"])
        expected_C = reference_mlp(p, (f_p_RO * f_h_RO).reshape(-1))
        np.testing.assert_allclose(logits_BC[b], expected_C, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="needs 2 token arrays"):
        model.apply({"params": params}, premise_BS)


def test_frozen_embeddings_get_no_gradient():
    tokens_BS = random_tokens(np.random.default_rng(3), LENGTHS, 6)
    for freeze in (False, True):
        model = sase.SASE(sase.SASEConfig.tiny(23, freeze_embeddings=freeze))
        params = random_params(model, tokens_BS)
        grads = jax.grad(lambda p, m=model: m.apply({"params": p}, tokens_BS).sum())(params)
        table_norm = float(jnp.abs(grads["encoder"]["embed"]["embedding"]).sum())
        assert (table_norm == 0.0) == freeze
        assert float(jnp.abs(grads["encoder"]["w_s1"]).sum()) > 0.0


def _dropout_output(model, params, tokens_BS, layer, deterministic):
    """The output of the encoder's dropout layer `layer` (Dropout_0: words, _2: BiLSTM states)."""
    _, state = model.apply(
        {"params": params},
        tokens_BS,
        deterministic=deterministic,
        rngs={"dropout": jax.random.key(0)},
        capture_intermediates=True,
        mutable=["intermediates"],
    )
    (output,) = state["intermediates"]["encoder"][layer]["__call__"]
    return np.asarray(output)


def test_word_dropout_zeroes_whole_tokens_in_training_only():
    tokens_BS = np.random.default_rng(4).integers(1, 23, size=(16, 12))
    model = sase.SASE(sase.SASEConfig.tiny(23, word_dropout_rate=0.5))
    params = random_params(model, tokens_BS)
    table_VM = np.asarray(params["encoder"]["embed"]["embedding"])
    for deterministic in (True, False):
        dropped_BSM = _dropout_output(model, params, tokens_BS, "Dropout_0", deterministic)
        kept_BS = np.abs(dropped_BSM).sum(-1) > 0
        scale = 1.0 if deterministic else 2.0
        np.testing.assert_allclose(
            dropped_BSM, table_VM[tokens_BS] * kept_BS[..., None] * scale, rtol=1e-6
        )
        assert kept_BS.all() if deterministic else 0.3 < kept_BS.mean() < 0.7


def test_hidden_dropout_drops_bilstm_states_in_training_only():
    tokens_BS = np.random.default_rng(5).integers(1, 23, size=(16, 12))
    model = sase.SASE(sase.SASEConfig.tiny(23, hidden_dropout_rate=0.5))
    params = random_params(model, tokens_BS)
    h_BSE = _dropout_output(model, params, tokens_BS, "Dropout_2", deterministic=True)
    train_BSE = _dropout_output(model, params, tokens_BS, "Dropout_2", deterministic=False)
    kept_BSE = train_BSE != 0
    assert 0.4 < kept_BSE.mean() < 0.6 and np.all(h_BSE != 0)
    np.testing.assert_allclose(train_BSE, np.where(kept_BSE, 2.0 * h_BSE, 0.0), rtol=1e-6)
    plain = sase.SASE(sase.SASEConfig.tiny(23))
    np.testing.assert_allclose(
        model.apply({"params": params}, tokens_BS),
        plain.apply({"params": params}, tokens_BS),
        rtol=1e-6,
    )


def test_bad_configs_are_one_line_errors():
    with pytest.raises(ValueError, match="hops must be positive"):
        sase.SASEConfig(10, hops=0)
    with pytest.raises(ValueError, match="dropout_rate"):
        sase.SASEConfig(10, dropout_rate=1.0)
    with pytest.raises(ValueError, match="word_dropout_rate"):
        sase.SASEConfig(10, word_dropout_rate=-0.1)
    with pytest.raises(ValueError, match="hidden_dropout_rate"):
        sase.SASEConfig(10, hidden_dropout_rate=1.0)
    yelp = sase.SASEConfig.yelp(100)
    assert (yelp.dropout_rate, yelp.hidden_dropout_rate) == (0.3, 0.3)
    assert (yelp.hidden_size, yelp.attention_hidden_size, yelp.hops, yelp.mlp_hidden_size) == (
        300,
        350,
        30,
        3000,
    )
