"""Recurrent building blocks shared by the RNN families: one LSTM/GRU step and a masked,
(bidirectional) recurrent layer over a padded batch.

LSTM (Hochreiter & Schmidhuber; gates i, f, g, o): c' = σ(f) c + σ(i) tanh(g), h' = σ(o) tanh(c').
GRU (Bahdanau et al. 2015, appendix A.1.1): r, z = σ(W x + U h), h̃ = tanh(W x + U (r ⊙ h)),
h' = (1 − z) h + z h̃.

`rnn_layer` runs one `lax.scan` per direction, the backward one with `reverse=True`. Each step
projects its own input (W x_t + b, as Flax's `nn.RNN` does), which XLA:CPU ran faster than one
projection of all positions before the scan (`make bench-sase`: 1.04-1.07× Flax's time before,
level after), and the carry is the state tuple (h, c) of an LSTM or (h,) of a GRU, faster than
one concatenated array that each step slices and rebuilds. Rows are right-padded and padding
leaves the state as it was, so the backward direction starts at each row's last real token and
padding never enters a real state, with no gather to reverse rows within their lengths (whose
gradient, a scatter, is slow on XLA:CPU). The encoder of `seq2seq_rnn` and the BiLSTM of `sase`
both stack it; its parameters are `w_x_<layer>`, `u_<layer>`, `b_<layer>` of the calling module.

B batch, S length, d directions, U hidden units per direction, Q gate pre-activations (4U for an
LSTM, 3U for a GRU), X carried state (U for a GRU, 2U for an LSTM), i input features, E = d·U.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from attention_jax.models.common import dtypes

CELLS = ("lstm", "gru")
GATES = {"lstm": 4, "gru": 3}
STATE_PARTS = {"lstm": 2, "gru": 1}  # (h, c) and (h,)


def param(module, name, shape, axes, init):
    """A parameter of `module` in its config's `param_dtype`, with logical axis names."""
    return module.param(
        name, nn.with_logical_partitioning(init, axes), shape, dtypes(module.config)[1]
    )


def matmul(equation, x, w, dtype):
    """A product in the compute dtype whose result returns to float32 for the gates."""
    return jnp.einsum(equation, x.astype(dtype), w.astype(dtype)).astype(jnp.float32)


def rnn_cell(cell, xw_Q, state, u_UQ, equation, dtype):
    """One LSTM or GRU step given the input projection xw = W x + b: the new state.

    A state is a tuple: (h, c) for an LSTM, (h,) for a GRU (`split_state` makes one from the
    concatenated [h; c]). U is the cell's hidden size (D in a decoder); `equation` multiplies h
    by u_UQ, e.g. "BD,DQ->BQ".
    """
    U = u_UQ.shape[-2]
    h_U = state[0]
    if cell == "lstm":
        i, f, g, o = jnp.split(xw_Q + matmul(equation, h_U, u_UQ, dtype), 4, axis=-1)
        c_U = jax.nn.sigmoid(f) * state[1] + jax.nn.sigmoid(i) * jnp.tanh(g)
        return jax.nn.sigmoid(o) * jnp.tanh(c_U), c_U
    rz = jax.nn.sigmoid(xw_Q[..., : 2 * U] + matmul(equation, h_U, u_UQ[..., : 2 * U], dtype))
    r_U, z_U = jnp.split(rz, 2, axis=-1)
    candidate_U = jnp.tanh(
        xw_Q[..., 2 * U :] + matmul(equation, r_U * h_U, u_UQ[..., 2 * U :], dtype)
    )
    return ((1.0 - z_U) * h_U + z_U * candidate_U,)


def split_state(cell, state_X):
    """The state tuple of `cell` from its concatenated form X: [h; c] (LSTM) or h (GRU)."""
    return tuple(jnp.split(state_X, STATE_PARTS[cell], axis=-1))


def rnn_layer(module, cell, x_BSi, valid_BS, *, layer, directions, hidden_size):
    """One masked (bidirectional) recurrent layer of `module` over right-padded rows (`valid_BS`
    True on each row's first tokens): (h_BSE, final_BdX).

    Annotations h_BSE = [→h_j; ←h_j] are zero at padding positions; final_BdX is each
    direction's state after its last real token (→h_n forward, ←h_1 backward).
    """
    dtype = dtypes(module.config)[0]
    d, U = directions, hidden_size
    Q = GATES[cell] * U
    w_idQ = param(
        module,
        f"w_x_{layer}",
        (x_BSi.shape[-1], d, Q),
        ("embed", None, "mlp"),
        nn.initializers.xavier_uniform(in_axis=0, out_axis=-1, batch_axis=(1,)),
    )
    u_dUQ = param(
        module, f"u_{layer}", (d, U, Q), (None, "embed", "mlp"), nn.initializers.orthogonal()
    )
    b_dQ = param(module, f"b_{layer}", (d, Q), (None, "mlp"), nn.initializers.zeros)
    xs = (jnp.swapaxes(x_BSi, 0, 1), jnp.swapaxes(valid_BS, 0, 1))
    h_BSU, final_X = [], []
    for direction in range(d):

        def step(state, xs, w_iQ=w_idQ[:, direction], u_UQ=u_dUQ[direction], b_Q=b_dQ[direction]):
            x_Bi, valid_B = xs
            xw_BQ = matmul("Bi,iQ->BQ", x_Bi, w_iQ, dtype) + b_Q.astype(jnp.float32)
            new = rnn_cell(cell, xw_BQ, state, u_UQ, "BU,UQ->BQ", dtype)
            # Padding leaves the state as it was: the forward carry ends at the last real state,
            # and the backward one stays zero through the trailing padding until the last token.
            state = jax.tree.map(lambda n, s: jnp.where(valid_B[:, None], n, s), new, state)
            return state, state[0]

        state = (jnp.zeros((x_BSi.shape[0], U), jnp.float32),) * STATE_PARTS[cell]
        state, h_SBU = jax.lax.scan(step, state, xs, reverse=direction == 1)
        h_BSU.append(jnp.swapaxes(h_SBU, 0, 1))
        final_X.append(jnp.concatenate(state, axis=-1))
    h_BSE = jnp.where(valid_BS[:, :, None], jnp.concatenate(h_BSU, axis=-1), 0.0)
    state_BdX = jnp.stack(final_X, axis=1)
    return h_BSE, state_BdX
