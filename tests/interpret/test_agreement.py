"""Kendall τ_b and top-k overlap per example, against scipy.stats.kendalltau and sets."""

import numpy as np
import pytest
import scipy.stats

from attention_jax.interpret import agreement


def _rows(rng, B=6, S=9):
    # Integers in a small range give ties, which τ_b treats specially.
    a = rng.integers(0, 5, (B, S)).astype(np.float32)
    b = (a + rng.integers(-2, 3, (B, S))).astype(np.float32)
    mask = rng.random((B, S)) < 0.8
    mask[:, :3] = True
    return a, b, mask


def test_kendall_tau_equals_scipy_on_the_masked_tokens():
    a, b, mask = _rows(np.random.default_rng(0))
    b[0] = a[0]  # perfect agreement
    b[1] = -a[1]  # perfect disagreement
    got = np.asarray(agreement.kendall_tau(a, b, mask))
    for row in range(len(a)):
        expected = scipy.stats.kendalltau(a[row][mask[row]], b[row][mask[row]]).statistic
        assert got[row] == pytest.approx(expected, abs=1e-6)
    assert got[0] == pytest.approx(1.0) and got[1] == pytest.approx(-1.0)


def test_kendall_tau_of_a_constant_row_is_nan_as_in_scipy():
    a = np.array([[1.0, 1.0, 1.0, 1.0]])
    b = np.array([[1.0, 2.0, 3.0, 4.0]])
    assert np.isnan(agreement.kendall_tau(a, b)[0])
    assert np.isnan(scipy.stats.kendalltau(a[0], b[0]).statistic)


def test_top_k_overlap_equals_the_overlap_of_the_top_sets():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 5, 10))
    mask = rng.random((5, 10)) < 0.7
    mask[:, :4] = True
    got = np.asarray(agreement.top_k_overlap(a, b, 3, mask))
    for row in range(5):
        idx = np.nonzero(mask[row])[0]
        top_a = set(idx[np.argsort(-a[row][idx])[:3]])
        top_b = set(idx[np.argsort(-b[row][idx])[:3]])
        assert got[row] == pytest.approx(len(top_a & top_b) / 3)


def test_bad_shapes_and_k_are_one_line_errors():
    with pytest.raises(ValueError, match="same"):
        agreement.kendall_tau(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="k must"):
        agreement.top_k_overlap(np.zeros((2, 3)), np.zeros((2, 3)), 0)
