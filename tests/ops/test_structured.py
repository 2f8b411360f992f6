"""SASE (Lin et al. 2017, eqs. 5–8) and its penalty against float64 NumPy written from the paper."""

import numpy as np
import pytest

from attention_jax import ops
from tests.ops.reference import JIT_VARIANTS, softmax_over_kept


def reference_structured(H_BSD, W_s1, W_s2, mask_BS):
    """A = softmax(W_s2 tanh(W_s1 Hᵀ)) over the kept tokens of each row, M = A H, per sentence."""
    B, S, D = H_BSD.shape
    R = W_s2.shape[0]
    A = np.zeros((B, R, S))
    for b in range(B):
        scores_RS = W_s2 @ np.tanh(W_s1 @ H_BSD[b].T)
        for r in range(R):
            A[b, r] = softmax_over_kept(scores_RS[r], mask_BS[b])
    M = np.stack([A[b] @ H_BSD[b] for b in range(B)])
    return M, A


def reference_penalty(A_BRS):
    """P = ‖A Aᵀ − I‖²_F."""
    eye = np.eye(A_BRS.shape[1])
    return np.array([np.linalg.norm(a @ a.T - eye, "fro") ** 2 for a in A_BRS])


@pytest.mark.parametrize("variant", JIT_VARIANTS)
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_structured_self_attention_matches_reference(seed, masked, variant):
    rng = np.random.default_rng(seed)
    B, S, D = seed + 1, rng.integers(2, 9), rng.integers(2, 7)
    d_a, r = rng.integers(2, 7), rng.integers(1, 5)
    hidden = rng.normal(size=(B, S, D)).astype(np.float32)
    w_s1_DA = rng.normal(size=(D, d_a)).astype(np.float32)
    w_s2_AR = rng.normal(size=(d_a, r)).astype(np.float32)
    mask_BS = rng.random((B, S)) < 0.7 if masked else None
    if masked:
        mask_BS[-1] = False  # an all-padding sentence embeds to zeros

    embedding, weights = variant(ops.structured_self_attention)(hidden, w_s1_DA, w_s2_AR, mask_BS)
    penalty = variant(ops.attention_penalty)(weights)

    keep = np.ones((B, S), bool) if mask_BS is None else mask_BS
    # The paper's W_s1 is d_a × 2u and W_s2 is r × d_a: the transposes of ours.
    expected_M, expected_A = reference_structured(
        hidden.astype(np.float64), w_s1_DA.T.astype(np.float64), w_s2_AR.T.astype(np.float64), keep
    )
    assert embedding.shape == (B, r, D) and weights.dtype == np.float32
    np.testing.assert_allclose(weights, expected_A, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(embedding, expected_M, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(penalty, reference_penalty(expected_A), atol=1e-5, rtol=1e-5)


def test_attention_penalty_is_zero_for_orthonormal_rows():
    """One-hot hops on distinct tokens give A Aᵀ = I exactly."""
    rng = np.random.default_rng(3)
    B, R, S = 3, 4, 6
    weights = np.zeros((B, R, S), np.float32)
    for b in range(B):
        weights[b, np.arange(R), rng.permutation(S)[:R]] = 1.0
    np.testing.assert_array_equal(ops.attention_penalty(weights), np.zeros(B))


def test_attention_penalty_counts_shared_and_spread_attention():
    # Two hops on the same token: A Aᵀ = [[1, 1], [1, 1]], so P = 2.
    same_token = np.array([[[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]], np.float32)
    np.testing.assert_allclose(ops.attention_penalty(same_token), [2.0], rtol=1e-6)
    rng = np.random.default_rng(4)
    spread = rng.dirichlet(np.ones(7), size=(2, 3)).astype(np.float32)
    penalty = np.asarray(ops.attention_penalty(spread))
    assert np.all(penalty > 0.0)
    np.testing.assert_allclose(penalty, reference_penalty(spread.astype(np.float64)), rtol=1e-5)
