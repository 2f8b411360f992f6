"""Position information for attention: absolute encodings added to the embeddings, and the two
relative schemes that act inside attention.

- Sinusoidal (Vaswani et al. 2017, section 3.5): PE(pos, 2i) = sin(pos / 10000^(2i/D)),
  PE(pos, 2i+1) = cos(pos / 10000^(2i/D)), added to the token embeddings.
- Rotary (RoPE; Su et al. 2021, section 3.2, eq. 34): each pair (x_2i, x_2i+1) of a query or key
  head at position m is rotated by the angle m θ_i, θ_i = base^(−2i/H), so that
  ⟨R_m q, R_n k⟩ depends on m − n only.
- ALiBi (Press et al. 2022, section 3): no position embeddings; the logit of query i for key j
  gets −m_n · (i − j), with one fixed slope m_n per head from a geometric sequence.

B batch, T query length, S key length, N heads, H head dim, D model dim.
"""

import math

import jax.numpy as jnp


def sinusoidal_positions(positions_T, d_model):
    """PE_TD (Vaswani et al. 2017, section 3.5): sin at even channels 2i, cos at odd 2i + 1."""
    inv_freq = 10000.0 ** (-jnp.arange(0, d_model, 2, dtype=jnp.float32) / d_model)
    # pos / 10000^(2i/D) for each position and each i < D/2 (T × D/2).
    angles = positions_T.astype(jnp.float32)[:, None] * inv_freq[None, :]
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(-1, d_model)


def rotary_embedding(x_BTNH, positions_BT, *, base=10000.0):
    """RoPE (Su et al. 2021, eq. 34): rotates each pair (x_2i, x_2i+1) of every head by m θ_i,
    θ_i = base^(−2i/H), where m is the token's position. Computed in float32; returns x's dtype."""
    B, T, N, H = x_BTNH.shape
    if H % 2:
        raise ValueError(f"rotary embeddings need an even head dim, got {H}")
    theta = base ** (-jnp.arange(0, H, 2, dtype=jnp.float32) / H)  # H/2 frequencies
    angles = positions_BT.astype(jnp.float32)[:, :, None, None] * theta  # B × T × 1 × H/2
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    pairs = x_BTNH.astype(jnp.float32).reshape(B, T, N, H // 2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = jnp.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1)
    return rotated.reshape(B, T, N, H).astype(x_BTNH.dtype)


def alibi_slopes(num_heads):
    """The head slopes m_1 … m_N of ALiBi (Press et al. 2022, section 3).

    For N a power of two: the geometric sequence 2^(−8/N), 2^(−16/N), …, 2^(−8). Otherwise the
    paper's code takes those of the largest power of two P < N and adds every other slope of 2P.
    """

    def geometric(n):
        return [2.0 ** (-8.0 * k / n) for k in range(1, n + 1)]

    if num_heads < 1:
        raise ValueError(f"num_heads must be positive, got {num_heads}")
    P = 2 ** math.floor(math.log2(num_heads))
    slopes = geometric(P) + geometric(2 * P)[0::2][: num_heads - P]
    return jnp.asarray(slopes, jnp.float32)


def alibi_bias(num_heads, positions_q_BT, positions_k_BS):
    """bias_BNTS = −m_n · |i − j| for query position i and key position j: the paper's −m_n (i − j)
    on the keys a causal mask keeps, and its symmetric form for bidirectional attention."""
    distance_BTS = jnp.abs(positions_q_BT[:, :, None] - positions_k_BS[:, None, :])
    return -alibi_slopes(num_heads)[None, :, None, None] * distance_BTS[:, None].astype(jnp.float32)
