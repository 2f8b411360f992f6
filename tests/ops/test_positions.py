"""Position encodings against float64 NumPy written from the papers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops
from tests.ops.reference import JIT_VARIANTS, alibi_slopes_reference, rotary_reference


@pytest.mark.parametrize("fn", JIT_VARIANTS)
def test_sinusoidal_positions_match_section_3_5(fn):
    T, D = 7, 10
    positions = np.arange(3, 3 + T)
    expected = np.zeros((T, D))
    for pos in positions:
        for i in range(D // 2):
            expected[pos - 3, 2 * i] = np.sin(pos / 10000 ** (2 * i / D))
            expected[pos - 3, 2 * i + 1] = np.cos(pos / 10000 ** (2 * i / D))
    got = fn(lambda p: ops.sinusoidal_positions(p, D))(jnp.asarray(positions))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fn", JIT_VARIANTS)
def test_rotary_embedding_matches_eq_34(fn):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 3, 8)).astype(np.float32)
    positions = rng.integers(0, 100, size=(2, 5))
    got = fn(lambda x, p: ops.rotary_embedding(x, p, base=500.0))(x, positions)
    np.testing.assert_allclose(got, rotary_reference(x, positions, 500.0), atol=2e-5, rtol=1e-5)


def test_rotary_scores_depend_only_on_relative_position():
    rng = np.random.default_rng(1)
    q, k = rng.normal(size=(2, 1, 6, 2, 16)).astype(np.float32)
    positions = jnp.asarray(rng.integers(0, 50, size=(1, 6)))

    def scores(shift):
        q_r = ops.rotary_embedding(q, positions + shift)
        k_r = ops.rotary_embedding(k, positions + shift)
        return jnp.einsum("BTNH,BSNH->BNTS", q_r, k_r)

    np.testing.assert_allclose(scores(0), scores(37), atol=1e-4)
    assert not np.allclose(scores(0), jnp.einsum("BTNH,BSNH->BNTS", q, k), atol=1e-2)


def test_rotary_embedding_rejects_odd_head_dim():
    with pytest.raises(ValueError, match="even head dim"):
        ops.rotary_embedding(jnp.zeros((1, 2, 1, 5)), jnp.zeros((1, 2)))


@pytest.mark.parametrize("num_heads", [1, 2, 6, 8, 12, 16, 25])
def test_alibi_slopes_match_the_paper(num_heads):
    np.testing.assert_allclose(
        ops.alibi_slopes(num_heads), alibi_slopes_reference(num_heads), rtol=1e-6
    )


def test_alibi_slopes_for_eight_heads_are_halves():
    np.testing.assert_allclose(ops.alibi_slopes(8), [2.0**-k for k in range(1, 9)], rtol=1e-6)


@pytest.mark.parametrize("fn", JIT_VARIANTS)
def test_alibi_bias_is_minus_slope_times_distance(fn):
    rng = np.random.default_rng(2)
    q_pos, k_pos = rng.integers(0, 30, size=(2, 4)), rng.integers(0, 30, size=(2, 6))
    got = fn(lambda q, k: ops.alibi_bias(3, q, k))(q_pos, k_pos)
    slopes = alibi_slopes_reference(3)
    expected = np.zeros((2, 3, 4, 6))
    for b, n, i, j in np.ndindex(expected.shape):
        expected[b, n, i, j] = -slopes[n] * abs(q_pos[b, i] - k_pos[b, j])
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_alibi_bias_ranks_keys_by_distance_with_a_causal_mask():
    bias = ops.alibi_bias(2, jnp.arange(5)[None], jnp.arange(5)[None])[0, 0]
    weights = ops.masked_softmax(bias, ops.causal_mask(5))
    assert jnp.all(jnp.diff(weights[4]) > 0)  # nearer keys get more weight
    assert jax.numpy.allclose(weights.sum(-1), 1.0)
