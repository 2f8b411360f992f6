"""Attention modules: they call the ops with their own parameters; MultiHeadAttention against a
float64 NumPy reference of Vaswani et al. (2017) eq. 1 and section 3.2.2; decode cache; causality;
mixed precision; logical axis names.
"""

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import layers, ops

ALLOWED_PARAM_AXES = {"vocab", "embed", "mlp", "heads", "kv", "norm", None}
KEY = jax.random.PRNGKey(0)


def normal(rng, *shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32)


def random_variables(module, *args, **kwargs):
    """Variables shaped by `module.init`, parameters drawn from NumPy and other collections zero.

    Tracing init with `eval_shape` skips compiling the initialisers, which dominates CPU time.
    """
    rng = np.random.default_rng(5)

    def fill(collection, a):
        if collection == "params":
            return jnp.asarray(0.5 * rng.normal(size=a.shape), a.dtype)
        return jnp.zeros(a.shape, a.dtype)

    abstract = jax.eval_shape(partial(module.init, KEY, **kwargs), *args)
    return {c: jax.tree.map(partial(fill, c), tree) for c, tree in abstract.items()}


def _luong_inputs(rng):
    return normal(rng, 2, 3, 5), normal(rng, 2, 4, 5), normal(rng, 2, 4, 6)


def _pair_inputs(rng):
    """Query, keys and values of different sizes, and a mask with one fully masked query."""
    q, k, v = normal(rng, 2, 3, 5), normal(rng, 2, 4, 6), normal(rng, 2, 4, 7)
    mask_BTS = np.asarray(rng.random((2, 3, 4)) < 0.7)
    mask_BTS[1, 0] = False
    return q, k, v, jnp.asarray(mask_BTS)


# (module, inputs, the op applied to the module's parameters) for the single-head modules.
SINGLE_HEAD_CASES = {
    "additive": (
        layers.AdditiveAttention(hidden_size=8),
        _pair_inputs,
        lambda p, q, k, v, m: ops.additive_attention(q, k, v, p["w_query"], p["w_key"], p["v"], m),
    ),
    **{
        f"luong_{score}": (
            layers.LuongAttention(score=score, hidden_size=7),
            lambda rng: (*_luong_inputs(rng), jnp.asarray(rng.random((2, 3, 4)) < 0.7)),
            lambda p, q, k, v, m, score=score: ops.luong_attention(
                q, k, v, score=score, w=p.get("w"), v=p.get("v"), mask_BTS=m
            ),
        )
        for score in ("dot", "general", "concat")
    },
    "structured": (
        layers.StructuredSelfAttention(hidden_size=6, num_hops=3),
        lambda rng: (normal(rng, 3, 5, 4), jnp.asarray(rng.random((3, 5)) < 0.7)),
        lambda p, h, m: ops.structured_self_attention(h, p["w_s1"], p["w_s2"], m),
    ),
}


@pytest.mark.parametrize("name", SINGLE_HEAD_CASES)
def test_module_equals_op_on_its_parameters_and_sows_weights(name):
    module, make_inputs, op = SINGLE_HEAD_CASES[name]
    module = module.clone(sow_weights=True)
    inputs = make_inputs(np.random.default_rng(0))
    variables = random_variables(module, *inputs)
    apply = jax.jit(partial(module.apply, mutable=["intermediates"]))
    (output, weights), state = apply(variables, *inputs)
    expected_output, expected_weights = op(nn.meta.unbox(variables.get("params", {})), *inputs)
    np.testing.assert_allclose(output, expected_output, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(weights, expected_weights, atol=1e-6, rtol=1e-6)
    assert not np.allclose(weights, 0.0)
    (sown,) = state["intermediates"]["attention_weights"]
    np.testing.assert_array_equal(sown, weights)


def reference_mha(params, x_q, x_kv, mask, num_heads, num_kv_heads):
    """softmax(q kᵀ / √H) v per head in float64; query head n reads key/value head n // (N / K)."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), nn.meta.unbox(params))
    x_q, x_kv = np.asarray(x_q, np.float64), np.asarray(x_kv, np.float64)
    q = np.einsum("btd,dnh->btnh", x_q, p["query"]["kernel"]) + p["query"]["bias"]
    k = np.einsum("bsd,dkh->bskh", x_kv, p["key"]["kernel"]) + p["key"]["bias"]
    v = np.einsum("bsd,dkh->bskh", x_kv, p["value"]["kernel"]) + p["value"]["bias"]
    (B, T, N, H), S = q.shape, k.shape[1]
    keep = np.broadcast_to(True if mask is None else np.asarray(mask), (B, N, T, S))
    heads = np.zeros((B, T, N, H))
    weights = np.zeros((B, N, T, S))
    for b in range(B):
        for n in range(N):
            kv_head = n // (num_heads // num_kv_heads)
            for t in range(T):
                logits = k[b, :, kv_head] @ q[b, t, n] / np.sqrt(H)
                if keep[b, n, t].any():
                    e = np.where(keep[b, n, t], np.exp(logits - logits[keep[b, n, t]].max()), 0.0)
                    weights[b, n, t] = e / e.sum()
                heads[b, t, n] = weights[b, n, t] @ v[b, :, kv_head]
    out = np.einsum("btnh,nhd->btd", heads, p["out"]["kernel"]) + p["out"]["bias"]
    return out, weights


MHA_CASES = {
    # name: (num_heads, num_kv_heads, T, S or None for self-attention, is_causal, mask kind)
    "self": (4, None, 5, None, False, None),
    "self_padding": (2, None, 5, None, False, "padding"),
    "cross_grouped": (4, 2, 3, 6, False, "padding"),
    "causal_grouped": (4, 2, 6, None, True, None),
    "causal_multi_query_padding": (4, 1, 5, None, True, "padding"),
}


@pytest.mark.parametrize("name", MHA_CASES)
def test_multi_head_attention_matches_reference(name):
    N, K, T, S, is_causal, mask_kind = MHA_CASES[name]
    rng = np.random.default_rng(1)
    B, D = 2, 8
    x_q = normal(rng, B, T, D)
    x_kv = None if S is None else normal(rng, B, S, D)
    S = T if S is None else S
    mask = None
    if mask_kind == "padding":
        valid_BS = np.arange(S)[None, :] < np.array([S, S - 2])[:, None]
        mask = jnp.asarray(valid_BS[:, None, None, :])  # (B, 1, 1, S): broadcast over heads, T
    module = layers.MultiHeadAttention(num_heads=N, num_kv_heads=K, sow_weights=True)
    variables = random_variables(module, x_q, x_kv, mask=mask, is_causal=is_causal)
    apply = jax.jit(partial(module.apply, is_causal=is_causal, mutable=["intermediates"]))
    out, state = apply(variables, x_q, x_kv, mask=mask)
    (weights,) = state["intermediates"]["attention_weights"]

    full_mask = None if mask is None else np.asarray(mask)
    if is_causal:
        full_mask = np.tril(np.ones((T, S), bool)) & (True if mask is None else full_mask)
    expected_out, expected_weights = reference_mha(
        variables["params"], x_q, x_q if x_kv is None else x_kv, full_mask, N, K or N
    )
    assert out.shape == (B, T, D) and weights.shape == (B, N, T, S)
    np.testing.assert_allclose(out, expected_out, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(weights, expected_weights, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("is_causal", [True, False])
def test_causal_output_has_exactly_zero_gradient_to_later_inputs(is_causal):
    rng = np.random.default_rng(2)
    T = 5
    x_BTD = normal(rng, 1, T, 8)
    module = layers.MultiHeadAttention(num_heads=4, num_kv_heads=2)
    variables = random_variables(module, x_BTD)
    jac = jax.jit(jax.jacrev(lambda x: module.apply(variables, x, is_causal=is_causal)))(x_BTD)
    jac_TDSD = np.asarray(jac[0, :, :, 0])
    for t in range(T):
        past, future = jac_TDSD[t, :, : t + 1], jac_TDSD[t, :, t + 1 :]
        assert np.all(past[:, -1] != 0.0)
        if is_causal:
            np.testing.assert_array_equal(future, 0.0)
        elif t < T - 1:
            assert np.any(future != 0.0)  # the check above can fail


@pytest.mark.parametrize(
    "chunks, num_kv_heads",
    [((1,) * 7, 2), ((2, 3, 2), None), ((3, 1, 3), 1)],
    ids=["one-grouped", "2-3-2", "3-1-3-multi-query"],
)
def test_decode_through_cache_equals_full_causal_pass(chunks, num_kv_heads):
    rng = np.random.default_rng(3)
    B, L, D = 2, sum(chunks), 8
    x_BLD = normal(rng, B, L, D)
    # Key padding that differs per example; in decode mode the mask spans the whole cache.
    mask = jnp.asarray((np.arange(L)[None, :] < np.array([L, L - 2])[:, None])[:, None, None, :])
    decoder = layers.MultiHeadAttention(num_heads=4, num_kv_heads=num_kv_heads, decode=True)
    variables = random_variables(decoder, x_BLD)
    assert variables["cache"]["cached_key"].shape == (B, L, num_kv_heads or 4, 2)
    full = decoder.clone(decode=False).apply(
        {"params": variables["params"]}, x_BLD, mask=mask, is_causal=True
    )

    step = jax.jit(
        lambda cache, x: decoder.apply(
            {"params": variables["params"], "cache": cache}, x, mask=mask, mutable=["cache"]
        )
    )
    cache, outputs, start = variables["cache"], [], 0
    for size in chunks:
        out, state = step(cache, x_BLD[:, start : start + size])
        cache, start = state["cache"], start + size
        outputs.append(out)
    assert int(cache["cache_index"]) == L
    np.testing.assert_allclose(jnp.concatenate(outputs, axis=1), full, atol=1e-5, rtol=1e-5)


PARAMETER_CASES = {
    "additive": (layers.AdditiveAttention(8), 3),
    "luong_general": (layers.LuongAttention("general"), 3),
    "luong_concat": (layers.LuongAttention("concat", hidden_size=5), 3),
    "structured": (layers.StructuredSelfAttention(6, 2), 1),
    "mha_grouped": (layers.MultiHeadAttention(4, 2, out_features=6), 1),
}


@pytest.mark.parametrize("name", PARAMETER_CASES)
def test_float32_parameters_with_logical_axes_and_bfloat16_compute(name):
    module, num_inputs = PARAMETER_CASES[name]
    module = module.clone(dtype=jnp.bfloat16)
    rng = np.random.default_rng(4)
    inputs = [normal(rng, 2, 3, 8) for _ in range(num_inputs)]
    variables = jax.jit(module.init)(KEY, *inputs)

    boxes = jax.tree.leaves(variables["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert boxes and all(isinstance(box, nn.LogicallyPartitioned) for box in boxes)
    for box in boxes:
        assert box.value.dtype == np.float32
        assert len(box.names) == box.value.ndim
        assert set(box.names) <= ALLOWED_PARAM_AXES, box.names
        named = [n for n in box.names if n is not None]
        # A name used twice in one array cannot be mapped to mesh axes.
        assert len(named) == len(set(named)), box.names

    result = jax.jit(module.apply)(variables, *inputs)
    output = result if name.startswith("mha") else result[0]
    assert output.dtype == jnp.bfloat16
    assert np.all(np.isfinite(np.asarray(output, np.float32)))
    if not name.startswith("mha"):
        assert result[1].dtype == np.float32


def test_bad_configurations_raise_value_error():
    x = jnp.ones((1, 3, 8))
    with pytest.raises(ValueError, match="score"):
        layers.LuongAttention("location").init(KEY, x, x, x)
    with pytest.raises(ValueError, match="divisible"):
        layers.MultiHeadAttention(num_heads=3).init(KEY, x)
    with pytest.raises(ValueError, match="decode"):
        layers.MultiHeadAttention(num_heads=2, decode=True).init(KEY, x, x)
    with pytest.raises(ValueError, match="multiple"):
        layers.MultiHeadAttention(num_heads=4, num_kv_heads=3).init(KEY, x)
