"""Additive attention (Bahdanau, Cho & Bengio 2015, eq. 6 and appendix A.1.2).

    e_ts = vᵀ tanh(W_q q_t + W_k k_s),   α_ts = softmax_s(e_ts),   c_t = Σ_s α_ts v_s

B batch, T query length, S key length, D query/key dim, E value dim, A attention hidden size.
"""

import jax.numpy as jnp

from attention_jax.ops.masks import masked_softmax


def additive_scores(query_proj_BTA, keys_proj_BSA, v_A):
    """e_ts = vᵀ tanh(query_proj_t + keys_proj_s), the score shared with Luong's `concat`."""
    hidden_BTSA = jnp.tanh(query_proj_BTA[:, :, None, :] + keys_proj_BSA[:, None, :, :])
    return jnp.einsum("BTSA,A->BTS", hidden_BTSA, v_A)


def attend(scores_BTS, values_BSE, mask_BTS=None):
    """Softmax the scores over keys, then average the values: (context_BTE, weights_BTS)."""
    weights_BTS = masked_softmax(scores_BTS, mask_BTS)
    context_BTE = jnp.einsum("BTS,BSE->BTE", weights_BTS.astype(values_BSE.dtype), values_BSE)
    return context_BTE, weights_BTS


def additive_attention(query_BTD, keys_BSD, values_BSE, w_query_DA, w_key_DA, v_A, mask_BTS=None):
    """Bahdanau attention. Returns (context_BTE, weights_BTS); weights are float32."""
    scores_BTS = additive_scores(query_BTD @ w_query_DA, keys_BSD @ w_key_DA, v_A)
    return attend(scores_BTS, values_BSE, mask_BTS)
