"""Bahdanau attention against a float64 NumPy loop over t and s (Bahdanau et al. 2015, A.1.2)."""

import numpy as np
import pytest

from attention_jax import ops
from tests.ops import reference
from tests.ops.reference import JIT_VARIANTS


def reference_additive(s_BTD, h_BSD, values_BSE, W_a, U_a, v_a, keep_BTS):
    """e_ts = v_aᵀ tanh(W_a s_t + U_a h_s), with the paper's W_a (A×D_q) and U_a (A×D_k)."""

    def score(b, t, s):
        return v_a @ np.tanh(W_a @ s_BTD[b, t] + U_a @ h_BSD[b, s])

    return reference.attention(score, values_BSE, keep_BTS)


@pytest.mark.parametrize("variant", JIT_VARIANTS)
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_additive_attention_matches_reference(seed, masked, variant):
    rng = np.random.default_rng(seed)
    B, A, E = seed + 1, rng.integers(2, 7), rng.integers(1, 6)
    T, S = rng.choice(np.arange(1, 8), size=2, replace=False)
    # The decoder state and the annotations may differ in size (n and 2n in the paper).
    D_q, D_k = rng.integers(2, 7, size=2)

    def f32(*shape):
        return rng.normal(size=shape).astype(np.float32)

    query, keys, values = f32(B, T, D_q), f32(B, S, D_k), f32(B, S, E)
    w_query_DA, w_key_DA, v_A = f32(D_q, A), f32(D_k, A), f32(A)
    mask_BTS = rng.random((B, T, S)) < 0.6 if masked else None
    if masked:
        mask_BTS[0, 0] = False  # a fully masked query gets zero weights and a zero context

    context, weights = variant(ops.additive_attention)(
        query, keys, values, w_query_DA, w_key_DA, v_A, mask_BTS
    )

    keep = np.ones((B, T, S), bool) if mask_BTS is None else mask_BTS
    expected_context, expected_weights = reference_additive(
        *(x.astype(np.float64) for x in (query, keys, values, w_query_DA.T, w_key_DA.T, v_A)),
        keep,
    )
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights, expected_weights, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(context, expected_context, atol=1e-5, rtol=1e-5)
