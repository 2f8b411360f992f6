"""Float64 NumPy building blocks for the op tests, written from the definitions, not our code."""

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
