"""Luong global attention, all three scores of eq. 8, against a float64 NumPy loop over t and s."""

import numpy as np
import pytest

from attention_jax import ops
from tests.ops import reference
from tests.ops.reference import JIT_VARIANTS


def luong_score(score, h_t, h_s, W_a, v_a):
    """Eq. 8 with W_a as written in the paper: D×D for general, A×2D for concat."""
    if score == "dot":
        return h_t @ h_s
    if score == "general":
        return h_t @ W_a @ h_s
    return v_a @ np.tanh(W_a @ np.concatenate([h_t, h_s]))


def reference_luong(score, h_BTD, h_BSD, values_BSE, W_a, v_a, keep_BTS):
    return reference.attention(
        lambda b, t, s: luong_score(score, h_BTD[b, t], h_BSD[b, s], W_a, v_a), values_BSE, keep_BTS
    )


@pytest.mark.parametrize("variant", JIT_VARIANTS)
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("score", ["dot", "general", "concat"])
def test_luong_attention_matches_reference(score, seed, masked, variant):
    rng = np.random.default_rng(seed)
    B, D, A, E = 2 * seed + 1, rng.integers(2, 7), rng.integers(2, 7), rng.integers(1, 6)
    T, S = rng.choice(np.arange(1, 8), size=2, replace=False)

    def f32(*shape):
        return rng.normal(size=shape).astype(np.float32)

    query, keys, values = f32(B, T, D), f32(B, S, D), f32(B, S, E)
    w = {"dot": None, "general": f32(D, D), "concat": f32(2 * D, A)}[score]
    v = f32(A) if score == "concat" else None
    mask_BTS = rng.random((B, T, S)) < 0.6 if masked else None
    if masked:
        mask_BTS[-1, -1] = False

    def attention(query, keys, values, w, v, mask_BTS):
        return ops.luong_attention(query, keys, values, score=score, w=w, v=v, mask_BTS=mask_BTS)

    context, weights = variant(attention)(query, keys, values, w, v, mask_BTS)

    keep = np.ones((B, T, S), bool) if mask_BTS is None else mask_BTS
    W_a = w.T if score == "concat" else w
    expected_context, expected_weights = reference_luong(
        score,
        query.astype(np.float64),
        keys.astype(np.float64),
        values.astype(np.float64),
        None if W_a is None else W_a.astype(np.float64),
        None if v is None else v.astype(np.float64),
        keep,
    )
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights, expected_weights, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(context, expected_context, atol=1e-5, rtol=1e-5)


def test_luong_attention_rejects_bad_arguments():
    x = np.ones((1, 2, 3), np.float32)
    with pytest.raises(ValueError, match="score"):
        ops.luong_attention(x, x, x, score="location")
    with pytest.raises(ValueError, match="needs w"):
        ops.luong_attention(x, x, x, score="general")
    with pytest.raises(ValueError, match="needs w and v"):
        ops.luong_attention(x, x, x, score="concat", w=np.ones((6, 4), np.float32))
