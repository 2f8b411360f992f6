"""Structured self-attentive sentence embedding (Lin et al. 2017, eqs. 5–8).

    A = softmax(W_s2 tanh(W_s1 Hᵀ))   (r × n: r hops over n tokens)
    M = A H                          (r × 2u: the sentence embedding matrix)
    P = ‖A Aᵀ − I‖²_F                 (penalty that pushes hops to attend to different tokens)

B batch, S tokens, D hidden dim (2u), A attention hidden size (d_a), R hops (r).
"""

import jax.numpy as jnp

from attention_jax.ops.masks import masked_softmax


def structured_self_attention(hidden_BSD, w_s1_DA, w_s2_AR, mask_BS=None):
    """Returns (embedding_BRD, weights_BRS); weights are float32."""
    scores_BRS = jnp.einsum("BSA,AR->BRS", jnp.tanh(hidden_BSD @ w_s1_DA), w_s2_AR)
    weights_BRS = masked_softmax(scores_BRS, None if mask_BS is None else mask_BS[:, None, :])
    embedding_BRD = jnp.einsum("BRS,BSD->BRD", weights_BRS.astype(hidden_BSD.dtype), hidden_BSD)
    return embedding_BRD, weights_BRS


def attention_penalty(weights_BRS):
    """P = ‖A Aᵀ − I‖²_F per example: penalty_B."""
    gram_BRR = jnp.einsum("BRS,BQS->BRQ", weights_BRS, weights_BRS)
    identity_RR = jnp.eye(weights_BRS.shape[1], dtype=gram_BRR.dtype)
    return jnp.sum(jnp.square(gram_BRR - identity_RR), axis=(1, 2))
