"""Multiplicative ("global") attention of Luong, Pham & Manning (2015), section 3.1, eq. 8.

    score(h_t, h̄_s) = h_tᵀ h̄_s                   dot
                    = h_tᵀ W_a h̄_s               general
                    = v_aᵀ tanh(W_a [h_t; h̄_s])   concat

B batch, T query length, S key length, D hidden dim, E value dim, A attention hidden size.
"""

import jax.numpy as jnp

from attention_jax.ops.additive import additive_scores, attend


def luong_attention(query_BTD, keys_BSD, values_BSE, *, score="dot", w=None, v=None, mask_BTS=None):
    """Returns (context_BTE, weights_BTS).

    Args:
      score: "dot" (no weights), "general" (w: D×D) or "concat" (w: 2D×A, v: A).
    """
    if score not in ("dot", "general", "concat"):
        raise ValueError(f"score must be 'dot', 'general' or 'concat', got {score!r}")
    if (score != "dot" and w is None) or (score == "concat" and v is None):
        raise ValueError(f"score={score!r} needs " + ("w and v" if score == "concat" else "w"))
    if score == "dot":
        scores_BTS = jnp.einsum("BTD,BSD->BTS", query_BTD, keys_BSD)
    elif score == "general":
        scores_BTS = jnp.einsum("BTD,BSD->BTS", query_BTD @ w, keys_BSD)
    else:
        # W [h_t; h̄_s] splits into W_top h_t + W_bottom h̄_s, so each side is projected once.
        D = query_BTD.shape[-1]
        scores_BTS = additive_scores(query_BTD @ w[:D], keys_BSD @ w[D:], v)
    return attend(scores_BTS, values_BSE, mask_BTS)
