"""Float64 NumPy building blocks for the op tests, written from the definitions, not our code."""

import math

import jax
import numpy as np
import pytest

JIT_VARIANTS = [pytest.param(jax.jit, id="jit"), pytest.param(lambda f: f, id="nojit")]


def softmax_over_kept(e_S, keep_S):
    """α_s = exp(e_s) / Σ_kept exp(e_s') on kept s, 0 elsewhere; all zeros when nothing is kept."""
    if not keep_S.any():
        return np.zeros(e_S.shape)
    p_S = np.where(keep_S, np.exp(e_S - e_S[keep_S].max()), 0.0)
    return p_S / p_S.sum()


def attention(score, values_BSE, keep_BTS):
    """α_ts = softmax_s(score(b, t, s)) over the kept keys and c_t = Σ_s α_ts v_s, one at a time.

    Returns:
      (context_BTE, alpha_BTS) in float64.
    """
    B, T, S = keep_BTS.shape
    alpha = np.zeros((B, T, S))
    for b in range(B):
        for t in range(T):
            e_S = np.array([score(b, t, s) for s in range(S)], np.float64)
            alpha[b, t] = softmax_over_kept(e_S, keep_BTS[b, t])
    return np.einsum("bts,bse->bte", alpha, values_BSE.astype(np.float64)), alpha


def rotary_reference(x_BTNH, positions_BT, base):
    """Su et al. 2021, eq. 34: the block-diagonal rotation R^d_{Θ,m} applied to each head."""
    B, T, N, H = x_BTNH.shape
    out = np.zeros((B, T, N, H))
    for b in range(B):
        for t in range(T):
            m = positions_BT[b, t]
            R = np.zeros((H, H))
            for i in range(H // 2):
                angle = m * base ** (-2.0 * i / H)
                R[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = [
                    [np.cos(angle), -np.sin(angle)],
                    [np.sin(angle), np.cos(angle)],
                ]
            out[b, t] = x_BTNH[b, t].astype(np.float64) @ R.T
    return out


def alibi_slopes_reference(n):
    """The ALiBi paper's get_slopes, written from its description: start = ratio = 2^(−8/n)."""
    if math.log2(n).is_integer():
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]
    p = 2 ** math.floor(math.log2(n))
    return alibi_slopes_reference(p) + alibi_slopes_reference(2 * p)[0::2][: n - p]
