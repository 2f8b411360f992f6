"""RNN encoder-decoder (Bahdanau et al. 2015; Luong et al. 2015): the bidirectional LSTM/GRU
encoder against a NumPy float64 reference run per example without padding, every attention type's
alignments (also as `cross_attention_weights`), one decoder step per attention type against NumPy
float64, and teacher forcing equal to step-by-step decoding.

U hidden units per direction, J gate pre-activations, I input features (see the model's legend).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import decoding
from attention_jax.models import seq2seq_rnn as rnn
from tests.models.test_transformer import random_batch, random_params

SMALL = dict(
    vocab_size=20,
    embed_size=6,
    encoder_hidden_size=5,
    decoder_hidden_size=10,
    attention_hidden_size=7,
    readout_size=4,
    dropout_rate=0.0,
)
LENGTHS = [6, 4, 1]


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_step(cell, x_I, h_U, c_U, w_IJ, u_UJ, b_J):
    """One LSTM or GRU step: the new (h, c); the GRU has no memory cell and returns c as is."""
    U = u_UJ.shape[0]
    if cell == "lstm":
        i, f, g, o = np.split(x_I @ w_IJ + h_U @ u_UJ + b_J, 4)
        c_U = sigmoid(f) * c_U + sigmoid(i) * np.tanh(g)
        return sigmoid(o) * np.tanh(c_U), c_U
    xw = x_I @ w_IJ + b_J
    r = sigmoid(xw[:U] + h_U @ u_UJ[:, :U])
    z = sigmoid(xw[U : 2 * U] + h_U @ u_UJ[:, U : 2 * U])
    candidate = np.tanh(xw[2 * U :] + (r * h_U) @ u_UJ[:, 2 * U :])
    return (1 - z) * h_U + z * candidate, c_U


def reference_direction(cell, x_SI, w_IJ, u_UJ, b_J):
    """Runs one direction over real tokens only: hidden states h_SU and the final state."""
    U = u_UJ.shape[0]
    h, c, outputs = np.zeros(U), np.zeros(U), []
    for x in x_SI:
        h, c = reference_step(cell, x, h, c, w_IJ, u_UJ, b_J)
        outputs.append(h)
    return np.stack(outputs), h


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bidirectional_encoder_matches_numpy_per_unpadded_example(cell):
    config = rnn.Seq2SeqRNNConfig(**SMALL, cell=cell, attention="none")
    model = rnn.Seq2SeqRNN(config)
    src_BS, tgt_BT = random_batch(np.random.default_rng(0), 3, 6, 4, 20, src_lengths=LENGTHS)
    params = random_params(model, src_BS, tgt_BT, std=0.5)
    encode = jax.jit(
        lambda p, src: model.apply({"params": p}, src, method=lambda m, s: m.encoder(s))
    )
    annotations_BSE, final_BdU = encode(params, src_BS)
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params["encoder"])
    for b, n in enumerate(LENGTHS):
        x_SI = p["embed"]["embedding"][np.asarray(src_BS[b, :n])]
        args = [(p["w_x_0"][:, d], p["u_0"][d], p["b_0"][d]) for d in range(2)]
        forward_SU, forward_final = reference_direction(cell, x_SI, *args[0])
        backward_SU, backward_final = reference_direction(cell, x_SI[::-1], *args[1])
        expected_SE = np.concatenate([forward_SU, backward_SU[::-1]], axis=1)
        np.testing.assert_allclose(annotations_BSE[b, :n], expected_SE, atol=1e-5, rtol=1e-5)
        assert np.all(np.asarray(annotations_BSE[b, n:]) == 0.0)
        np.testing.assert_allclose(final_BdU[b, 0], forward_final, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(final_BdU[b, 1], backward_final, atol=1e-5, rtol=1e-5)
    # The same example alone, without padding, through the model itself.
    alone_E, _ = encode(params, src_BS[1:2, : LENGTHS[1]])
    np.testing.assert_allclose(alone_E[0], annotations_BSE[1, : LENGTHS[1]], atol=1e-6)


CASES = {
    "none-lstm": dict(attention="none", cell="lstm"),
    "bahdanau-gru": dict(attention="bahdanau", cell="gru"),
    "luong_dot-lstm-2-layers": dict(
        attention="luong_dot", cell="lstm", num_decoder_layers=2, num_encoder_layers=2
    ),
    "luong_general-gru-unidirectional": dict(
        attention="luong_general", cell="gru", bidirectional=False
    ),
    "luong_concat-lstm-no-feeding": dict(
        attention="luong_concat", cell="lstm", input_feeding=False
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_alignments_and_step_by_step_decoding_equal_teacher_forcing(name):
    config = rnn.Seq2SeqRNNConfig(**SMALL, **CASES[name])
    model = rnn.Seq2SeqRNN(config)
    src_BS, tgt_BT = random_batch(np.random.default_rng(1), 3, 6, 5, 20, src_lengths=LENGTHS)
    params = random_params(model, src_BS, tgt_BT, std=0.5)

    @jax.jit
    def run(params):
        forced = model.apply({"params": params}, src_BS, tgt_BT, return_weights=True)
        step_fn, state = model.start_decoding(params, src_BS, 7)
        _, stepped_TBV = jax.lax.scan(lambda state, x: step_fn(state, x)[::-1], state, tgt_BT.T)
        ids = dict(bos_id=1, eos_id=2, max_len=7)
        greedy_BL = decoding.greedy(step_fn, state, **ids)
        beams = [
            decoding.beam_search(step_fn, state, beam_size=w, alpha=0.0, **ids) for w in (1, 3)
        ]
        weights_BNTS = model.cross_attention_weights(params, src_BS, tgt_BT)
        return forced, jnp.swapaxes(stepped_TBV, 0, 1), greedy_BL, beams, weights_BNTS

    (logits_BTV, weights_BTS), stepped_BTV, greedy_BL, beams, weights_BNTS = run(params)
    # The carry is batch-major, so beam search can repeat and reorder it; beam 1 is greedy.
    np.testing.assert_array_equal(beams[0][0][:, 0], greedy_BL)
    assert beams[1][0].shape == (3, 3, 7) and np.all(np.isfinite(beams[1][1]))
    assert logits_BTV.shape == (3, 5, 20) and np.all(np.isfinite(logits_BTV))
    np.testing.assert_allclose(stepped_BTV, logits_BTV, atol=1e-5, rtol=1e-5)
    weights_BTS = np.asarray(weights_BTS)
    real_B1S = np.asarray(src_BS != 0)[:, None, :]
    assert weights_BTS.shape == (3, 5, 6)
    assert np.all(weights_BTS[np.broadcast_to(~real_B1S, weights_BTS.shape)] == 0.0)
    expected_sum = 0.0 if config.attention == "none" else 1.0
    np.testing.assert_allclose(weights_BTS.sum(-1), expected_sum, atol=1e-5)
    # The decoding interface's weights are the `return_weights=True` alignments as one head.
    assert weights_BNTS.shape == (3, 1, 5, 6)
    np.testing.assert_array_equal(weights_BNTS[:, 0], weights_BTS)


def reference_attention(attention, p, query_D, h_bar_SE, summary_E):
    """α_S and c_E: Bahdanau's eq. 6 (the query is s_{i-1}), Luong's eq. 8 (the query is h_t), or
    Cho et al.'s fixed summary c, which enters every step."""
    cell, u_a_EA = p["cell"], p.get("key_projection", {}).get("kernel")
    if attention == "none":
        return np.zeros(len(h_bar_SE)), summary_E
    if attention == "bahdanau":
        e_S = np.tanh(query_D @ cell["w_query"] + h_bar_SE @ u_a_EA) @ cell["v"]
    elif attention == "luong_dot":
        e_S = h_bar_SE @ query_D
    elif attention == "luong_general":
        e_S = h_bar_SE @ (query_D @ cell["attention"]["w"])
    else:  # v_aᵀ tanh(W_a [h_t; h̄_s]) with W_a = [W_q; W_k], the model's two halves
        w_a = np.concatenate([cell["w_query"], u_a_EA])
        # The rows [h_t; h̄_s], one per source token.
        pairs = np.concatenate([np.tile(query_D, (len(h_bar_SE), 1)), h_bar_SE], axis=1)
        e_S = np.tanh(pairs @ w_a) @ cell["v"]
    a_S = np.exp(e_S - e_S.max()) / np.exp(e_S - e_S.max()).sum()
    return a_S, a_S @ h_bar_SE


@pytest.mark.parametrize("attention", rnn.ATTENTIONS)
def test_decoder_step_matches_numpy_float64(attention):
    """One decoder step from a random state against the papers: Bahdanau's (eqs. 4-6, deep
    maxout output of A.2.2) with c_i from s_{i-1}, or Luong's with input feeding, eq. 8's score
    from h_t, h̃_t = tanh(W_c [c_t; h_t]) (eq. 5) and the logits (eq. 6)."""
    config = rnn.Seq2SeqRNNConfig(**SMALL, attention=attention)
    model = rnn.Seq2SeqRNN(config)
    rng = np.random.default_rng(3)
    src_BS, tgt_BT = random_batch(rng, 3, 6, 5, 20, src_lengths=LENGTHS)
    params = random_params(model, src_BS, tgt_BT, std=0.5)
    memory, carry = model.apply({"params": params}, src_BS, method=rnn.Seq2SeqRNN.encode)
    D = config.decoder_hidden_size
    state_BYX, feed_BD = rng.normal(size=(3, 1, 2 * D)), rng.normal(size=(3, D))
    carry = {**carry, "rnn": jnp.asarray(state_BYX, jnp.float32)}
    if "feed" in carry:
        carry["feed"] = jnp.asarray(feed_BD, jnp.float32)
    logits_BV, weights_BS, carry = model.apply(
        {"params": params}, memory, carry, tgt_BT[:, 1], method=rnn.Seq2SeqRNN.step
    )

    p = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), params)
    cell, luong = p["cell"], attention.startswith("luong")
    for b, length in enumerate(LENGTHS):
        s_prev_D, emb_M = state_BYX[b, 0, :D], cell["embed"]["embedding"][tgt_BT[b, 1]]
        h_bar_SE = np.asarray(memory["annotations"][b, :length], np.float64)
        summary_E = np.asarray(memory.get("summary", np.zeros((3, 1)))[b], np.float64)
        lstm = (state_BYX[b, 0, D:], cell["w_x_0"], cell["u_0"], cell["b_0"])
        if luong:
            h_D, _ = reference_step("lstm", np.concatenate([emb_M, feed_BD[b]]), s_prev_D, *lstm)
            a_S, c_E = reference_attention(attention, p, h_D, h_bar_SE, summary_E)
            out_O = np.tanh(np.concatenate([c_E, h_D]) @ cell["w_c"]["kernel"])
            np.testing.assert_allclose(carry["feed"][b], out_O, atol=1e-5)
        else:
            a_S, c_E = reference_attention(attention, p, s_prev_D, h_bar_SE, summary_E)
            h_D, _ = reference_step("lstm", np.concatenate([emb_M, c_E]), s_prev_D, *lstm)
            readout = cell["readout"]
            t_2O = np.concatenate([h_D, emb_M, c_E]) @ readout["kernel"] + readout["bias"]
            out_O = t_2O.reshape(-1, 2).max(axis=1)
        logits_V = out_O @ cell["logits"]["kernel"] + cell["logits"]["bias"]
        np.testing.assert_allclose(weights_BS[b, :length], a_S, atol=1e-5)
        assert np.all(np.asarray(weights_BS[b, length:]) == 0.0)
        np.testing.assert_allclose(logits_BV[b], logits_V, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(cell="rnn"),
        dict(attention="luong_diag"),
        dict(attention="luong_dot", bidirectional=False),
    ],
)
def test_bad_config_raises(overrides):
    with pytest.raises(ValueError):
        rnn.Seq2SeqRNNConfig(**{**SMALL, **overrides})


def test_label_smoothing_is_a_retired_field_not_an_architecture_setting():
    fields = {f.name for f in dataclasses.fields(rnn.Seq2SeqRNNConfig)}
    assert "label_smoothing" not in fields and "RETIRED_FIELDS" not in fields
    assert rnn.Seq2SeqRNNConfig.RETIRED_FIELDS == ("label_smoothing",)
    with pytest.raises(TypeError):
        rnn.Seq2SeqRNNConfig(**SMALL, label_smoothing=0.1)


def test_presets():
    search = rnn.Seq2SeqRNNConfig.rnnsearch(30000)
    assert (search.cell, search.encoder_hidden_size, search.annotation_size) == ("gru", 1000, 2000)
    luong = rnn.Seq2SeqRNNConfig.luong(50000, score="dot")
    assert (luong.num_decoder_layers, luong.attention, luong.bidirectional) == (
        4,
        "luong_dot",
        False,
    )
