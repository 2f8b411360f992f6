"""Masks against hand-built NumPy masks; masked_softmax against a float64 softmax over kept keys."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops
from tests.ops.reference import JIT_VARIANTS, softmax_over_kept


def test_padding_mask():
    rng = np.random.default_rng(0)
    valid_q_BT, valid_k_BS = rng.random((3, 4)) < 0.7, rng.random((3, 6)) < 0.7
    expected = np.zeros((3, 4, 6), bool)
    for b in range(3):
        for t in range(4):
            for s in range(6):
                expected[b, t, s] = valid_q_BT[b, t] and valid_k_BS[b, s]
    np.testing.assert_array_equal(ops.padding_mask(valid_q_BT, valid_k_BS), expected)


@pytest.mark.parametrize("T, S, offset", [(5, None, 0), (3, 7, 0), (3, 7, 4), (6, 4, 2), (1, 9, 5)])
def test_causal_mask(T, S, offset):
    expected = np.array(
        [[s <= t + offset for s in range(T if S is None else S)] for t in range(T)], bool
    )
    np.testing.assert_array_equal(ops.causal_mask(T, S, offset), expected)


def test_causal_mask_traced_offset():
    """The decode cache passes its index as a traced offset."""
    got = jax.jit(lambda i: ops.causal_mask(2, 5, i))(jnp.int32(2))
    np.testing.assert_array_equal(got, [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])


def test_cross_mask():
    valid_k_BS = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)
    expected = np.stack([np.tile(row, (3, 1)) for row in valid_k_BS])
    np.testing.assert_array_equal(ops.cross_mask(valid_k_BS, 3), expected)


def test_segment_mask():
    segment_q_BT = np.array([[1, 1, 2, 2, 0], [1, 2, 3, 3, 3]])
    segment_k_BS = np.array([[1, 1, 1, 2, 0, 0], [3, 3, 1, 0, 2, 2]])
    expected = np.zeros((2, 5, 6), bool)
    for b in range(2):
        for t in range(5):
            for s in range(6):
                q, k = segment_q_BT[b, t], segment_k_BS[b, s]
                expected[b, t, s] = q == k and q != 0
    np.testing.assert_array_equal(ops.segment_mask(segment_q_BT, segment_k_BS), expected)


def test_combine_masks():
    rng = np.random.default_rng(1)
    padding_BTS = rng.random((2, 4, 5)) < 0.6
    causal_TS = np.tril(np.ones((4, 5), bool))
    assert ops.combine_masks() is None
    assert ops.combine_masks(None, None) is None
    np.testing.assert_array_equal(ops.combine_masks(None, causal_TS), causal_TS)
    np.testing.assert_array_equal(
        ops.combine_masks(padding_BTS, None, causal_TS), padding_BTS & causal_TS[None]
    )


def _reference_softmax(logits, mask):
    out = np.zeros(logits.shape)
    for idx in np.ndindex(logits.shape[:-1]):
        out[idx] = softmax_over_kept(logits[idx].astype(np.float64), mask[idx])
    return out


@pytest.mark.parametrize("variant", JIT_VARIANTS)
def test_masked_softmax(variant):
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(3, 4, 7)).astype(np.float32) * 3
    mask = rng.random((3, 4, 7)) < 0.5
    mask[0, 1] = False  # a fully masked row
    mask[1, 2] = True
    weights = np.asarray(variant(ops.masked_softmax)(logits, mask))
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights, _reference_softmax(logits, mask), atol=1e-6, rtol=1e-5)
    assert np.all(weights[~mask] == 0.0)
    np.testing.assert_array_equal(weights[0, 1], 0.0)
    row_sums = weights.sum(-1)
    np.testing.assert_allclose(row_sums[mask.any(-1)], 1.0, rtol=1e-6)

    unmasked = np.asarray(variant(ops.masked_softmax)(logits))
    np.testing.assert_allclose(unmasked, _reference_softmax(logits, np.ones_like(mask)), rtol=1e-5)


def test_masked_softmax_half_precision_logits_give_float32():
    logits = jnp.array([[1.0, 2.0, 3.0]], jnp.bfloat16)
    weights = ops.masked_softmax(logits, jnp.array([[True, True, False]]))
    assert weights.dtype == jnp.float32
    np.testing.assert_allclose(weights, [[1 / (1 + np.e), np.e / (1 + np.e), 0.0]], rtol=1e-6)


def test_masked_softmax_fully_masked_row_has_finite_zero_gradients():
    rng = np.random.default_rng(3)
    logits = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
    mask = jnp.array([[False] * 5, [True, False, True, True, False]])
    cotangent = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
    grad = jax.grad(lambda x: jnp.sum(ops.masked_softmax(x, mask) * cotangent))(logits)
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[0], 0.0)
    np.testing.assert_array_equal(grad[1][~np.asarray(mask[1])], 0.0)
    assert np.any(grad[1] != 0.0)
