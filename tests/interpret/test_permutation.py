"""Jain & Wallace's permutation test: the permuted attention row of one `MultiHeadAttention`
(grouped key/value heads, padding) against a float64 NumPy reference from the layer's own
parameters; the identity permutation changes nothing, in the layer and in BERT; the batched
test equals permutations run one at a time and NumPy's total variation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attention_jax import layers
from attention_jax.interpret import permutation
from tests.interpret.conftest import bert_batch


class _OneLayer(nn.Module):
    """A `MultiHeadAttention` at the path "attention", 4 query heads sharing 2 key/value heads."""

    sow_weights: bool = False

    @nn.compact
    def __call__(self, x_BTD, mask):
        attention = layers.MultiHeadAttention(
            num_heads=4, num_kv_heads=2, sow_weights=self.sow_weights, name="attention"
        )
        return attention(x_BTD, mask=mask)


def _reference(p, x_BTD, mask_BS, perm_BS, query):
    """Grouped-query attention in float64 with row `query`'s weights α̂_s = α_{perm[s]}."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    x = np.asarray(x_BTD, np.float64)
    q, k, v = (
        np.einsum("BTD,DNH->BTNH", x, p[name]["kernel"]) + p[name]["bias"]
        for name in ("query", "key", "value")
    )
    k, v = np.repeat(k, 2, axis=2), np.repeat(v, 2, axis=2)  # head n reads key/value head n // 2
    logits = np.einsum("BTNH,BSNH->BNTS", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(mask_BS[:, None, None, :], logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    for b, perm_S in enumerate(perm_BS):
        w[b, :, query] = w[b, :, query][:, perm_S]
    heads_BTNH = np.einsum("BNTS,BSNH->BTNH", w, v)
    return np.einsum("BTNH,NHD->BTD", heads_BTNH, p["out"]["kernel"]) + p["out"]["bias"]


def _softmax(x_BC):
    e_BC = np.exp(x_BC - x_BC.max(-1, keepdims=True))
    return e_BC / e_BC.sum(-1, keepdims=True)


def test_a_permuted_row_equals_the_float64_reference():
    rng = np.random.default_rng(0)
    x_BTD = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
    mask_BS = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
    mask_B11S = jnp.asarray(mask_BS[:, None, None])
    variables = nn.unbox(_OneLayer().init(jax.random.key(0), x_BTD, mask_B11S))
    plain = _OneLayer().apply(variables, x_BTD, mask_B11S)
    _, state = _OneLayer(sow_weights=True).apply(
        variables, x_BTD, mask_B11S, mutable=["intermediates"]
    )
    weights_BNTS = state["intermediates"]["attention"]["attention_weights"][0]

    def permuted(perm_BS, query):
        return permutation.with_permuted_attention(
            lambda: _OneLayer().apply(variables, x_BTD, mask_B11S),
            "attention",
            weights_BNTS,
            jnp.asarray(perm_BS),
            query=query,
        )

    identity_BS = np.broadcast_to(np.arange(5), (2, 5))
    np.testing.assert_array_equal(permuted(identity_BS, 0), plain)
    perm_BS = permutation.random_permutations(rng, mask_BS, 1)[:, 0]
    assert (perm_BS != identity_BS).any(1).all()
    for query in (0, 3):
        got = permuted(perm_BS, query)
        want = _reference(variables["params"]["attention"], x_BTD, mask_BS, perm_BS, query)
        np.testing.assert_allclose(got, want, atol=1e-5)
        others = np.arange(5) != query
        np.testing.assert_array_equal(got[:, others], plain[:, others])
        assert not np.allclose(got[:, query], plain[:, query], atol=1e-3)


def test_random_permutations_shuffle_only_the_real_tokens():
    mask_ZS = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]], bool)
    perm_ZPS = permutation.random_permutations(np.random.default_rng(0), mask_ZS, 50)
    assert perm_ZPS.shape == (3, 50, 6)
    for row_S, perm_PS in zip(mask_ZS, perm_ZPS, strict=True):
        (real,) = np.nonzero(row_S)
        for perm_S in perm_PS:
            np.testing.assert_array_equal(np.sort(perm_S[real]), real)
            np.testing.assert_array_equal(perm_S[~row_S], np.nonzero(~row_S)[0])
    # All 4! orders of row 0 are equally likely, so 50 draws find many of them.
    assert len({tuple(p) for p in perm_ZPS[0]}) > 12


def test_bert_permutation_test(bert_classifier):
    task, params = bert_classifier
    features = bert_batch(np.random.default_rng(2), B=3, T=8)
    layer = "bert/layers_1/attention"  # the last of two
    weights_BNTS = task.attention_weights(params, features)[layer]
    plain_BC = task.apply(params, features)
    identity_BS = jnp.broadcast_to(jnp.arange(8), (3, 8))
    unchanged_BC = permutation.with_permuted_attention(
        lambda: task.apply(params, features), layer, weights_BNTS, identity_BS
    )
    np.testing.assert_array_equal(unchanged_BC, plain_BC)

    rng = np.random.default_rng(3)
    perm_ZPS = permutation.random_permutations(rng, features["input_mask"], 5)
    perm_ZPS[:, 0] = np.arange(8)
    # Two rows at a time (the second batch padded), two permutations at a time.
    tvd_ZP, attention_ZS = permutation.permutation_test(
        task, params, features, perm_ZPS, batch_size=2, chunk=2
    )
    np.testing.assert_allclose(attention_ZS, np.asarray(weights_BNTS)[:, :, 0].mean(1), atol=1e-7)
    p_BC = _softmax(np.asarray(plain_BC, np.float64))
    for perm_BS, tvd_B in zip(perm_ZPS.swapaxes(0, 1), tvd_ZP.T, strict=True):
        logits_BC = permutation.with_permuted_attention(
            lambda: task.apply(params, features), layer, weights_BNTS, jnp.asarray(perm_BS)
        )
        q_BC = _softmax(np.asarray(logits_BC, np.float64))
        np.testing.assert_allclose(tvd_B, 0.5 * np.abs(q_BC - p_BC).sum(-1), atol=1e-6)
    # Vectorised, the identity reaches the unpermuted output up to float32 rounding.
    np.testing.assert_allclose(tvd_ZP[:, 0], 0.0, atol=1e-6)
    assert (tvd_ZP[:, 1:] > 1e-4).mean() > 0.5


def test_summary_bins_the_median_tvds_by_max_attention():
    tvd_ZP = np.array([[1.0, 0.0, 2.0], [3.0, 3.0, 9.0], [5.0, 6.0, 4.0], [7.0, 7.0, 7.0]])
    attention_ZS = np.array([[0.1, 0.0], [0.05, 0.2], [0.3, 0.1], [1.0, 0.0]])
    got = permutation.summary(tvd_ZP, attention_ZS, edges=(0.0, 0.25, 0.5, 0.75, 1.0))
    assert got["permutations"] == 3
    np.testing.assert_allclose(
        got["quartiles"]["median_tvd"], np.percentile([1, 3, 5, 7], [25, 50, 75])
    )
    np.testing.assert_allclose(
        got["quartiles"]["max_tvd"], np.percentile([2, 9, 6, 7], [25, 50, 75])
    )
    assert got["median_tvd_by_max_attention"] == {
        "0.0-0.25": {"sentences": 2, "median_tvd": 2.0},
        "0.25-0.5": {"sentences": 1, "median_tvd": 5.0},
        "0.5-0.75": {"sentences": 0, "median_tvd": None},
        "0.75-1.0": {"sentences": 1, "median_tvd": 7.0},
    }
