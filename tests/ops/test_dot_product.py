"""Scaled dot-product attention (Vaswani et al. 2017, eq. 1) against a float64 NumPy reference;
the chunked (FlashAttention) implementation against the xla one, outputs and gradients.

B batch, T query length, S key length, N query heads, K key/value heads, H head dim.
"""

import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops
from attention_jax.ops import chunked

JIT_VARIANTS = [pytest.param(jax.jit, id="jit"), pytest.param(lambda f: f, id="nojit")]

# (heads N, kv heads K, is_causal, mask kind, bias kind): multi-head, grouped and multi-query
# heads, with every mask and bias layout the ops accept.
CASES = {
    "mha": (2, 2, False, None, None),
    "gqa_causal": (4, 2, True, None, None),
    "mqa_padding": (4, 1, False, "padding", None),
    "gqa_causal_padding_bias": (4, 2, True, "padding", "heads"),
    "full_mask_TS_bias": (2, 1, False, "full", "TS"),
    "TS_mask_batch_bias": (2, 2, True, "TS", "batch"),
}


def reference_attention(q_BTNH, k_BSKH, v_BSKH, mask=None, bias=None, is_causal=False, scale=None):
    """softmax(Q Kᵀ · scale + bias) V over the attended keys, in float64; rows with no key get
    zero weights. Key/value head n // G serves query head n. Returns (out_BTNH, weights_BNTS)."""
    q, k, v = (np.asarray(x, np.float64) for x in (q_BTNH, k_BSKH, v_BSKH))
    B, T, N, H = q.shape
    S, K = k.shape[1], k.shape[2]
    k, v = np.repeat(k, N // K, axis=2), np.repeat(v, N // K, axis=2)
    scale = 1.0 / np.sqrt(H) if scale is None else scale
    logits = np.einsum("btnh,bsnh->bnts", q, k) * scale
    if bias is not None:
        logits = logits + np.asarray(bias, np.float64)
    attend = np.ones((B, N, T, S), bool)
    if mask is not None:
        attend &= np.asarray(mask)
    if is_causal:
        attend &= np.tril(np.ones((T, S), bool))
    logits = np.where(attend, logits, -np.inf)
    row_max = logits.max(axis=-1, keepdims=True)
    exp = np.exp(logits - np.where(np.isfinite(row_max), row_max, 0.0))
    total = exp.sum(axis=-1, keepdims=True)
    weights = np.divide(exp, total, out=np.zeros_like(exp), where=total > 0)
    return np.einsum("bnts,bsnh->btnh", weights, v), weights


def random_case(name, seed):
    """Fresh random shapes (T ≠ S) and inputs for one of CASES; padding masks may blank out a
    whole batch element, so fully masked rows are covered too."""
    N, K, is_causal, mask_kind, bias_kind = CASES[name]
    rng = np.random.default_rng(seed)
    B, H = int(rng.integers(1, 4)), int(rng.choice([4, 8]))
    T, S = (int(x) for x in rng.choice(np.arange(5, 14), size=2, replace=False))

    def normal(*shape):
        return jnp.asarray(rng.normal(size=shape), jnp.float32)

    mask = None
    if mask_kind == "padding":
        lengths_B = rng.integers(0, S + 1, size=B)
        mask = jnp.asarray(np.arange(S) < lengths_B[:, None])[:, None, None, :]
    elif mask_kind == "full":
        mask = jnp.asarray(rng.random((B, N, T, S)) < 0.7)
    elif mask_kind == "TS":
        mask = jnp.asarray(rng.random((T, S)) < 0.7)
    bias_shape = {None: None, "heads": (1, N, T, S), "TS": (T, S), "batch": (B, 1, T, S)}
    bias = None if bias_kind is None else normal(*bias_shape[bias_kind])
    inputs = dict(
        q_BTNH=normal(B, T, N, H),
        k_BSKH=normal(B, S, K, H),
        v_BSKH=normal(B, S, K, H),
        dout_BTNH=normal(B, T, N, H),
    )
    return inputs, dict(mask=mask, bias=bias, is_causal=is_causal)


@pytest.mark.parametrize("variant", JIT_VARIANTS)
@pytest.mark.parametrize("name", list(CASES))
def test_xla_matches_reference(name, variant):
    inputs, options = random_case(name, seed=len(name))
    scale = 0.3
    attention = variant(
        functools.partial(
            ops.dot_product_attention, implementation="xla", return_weights=True, **options
        )
    )
    out_BTNH, weights_BNTS = attention(
        inputs["q_BTNH"], inputs["k_BSKH"], inputs["v_BSKH"], scale=scale
    )
    out_ref, weights_ref = reference_attention(
        inputs["q_BTNH"], inputs["k_BSKH"], inputs["v_BSKH"], scale=scale, **options
    )
    np.testing.assert_allclose(out_BTNH, out_ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(weights_BNTS, weights_ref, atol=1e-5, rtol=1e-5)


def fully_masked_case():
    """Query 1 of batch 0 and all of batch 1's queries may attend nothing."""
    rng = np.random.default_rng(0)
    q_BTNH, k_BSKH, v_BSKH = (
        jnp.asarray(rng.normal(size=shape), jnp.float32)
        for shape in [(2, 5, 2, 4), (2, 6, 1, 4), (2, 6, 1, 4)]
    )
    mask = np.ones((2, 1, 5, 6), bool)
    mask[0, :, 1] = False
    mask[1] = False
    return q_BTNH, k_BSKH, v_BSKH, jnp.asarray(mask)


@pytest.mark.parametrize("implementation", ["xla", "chunked"])
def test_fully_masked_rows_give_zeros_and_finite_gradients(implementation):
    q_BTNH, k_BSKH, v_BSKH, mask = fully_masked_case()

    def loss(q_BTNH, k_BSKH, v_BSKH):
        out_BTNH = ops.dot_product_attention(
            q_BTNH, k_BSKH, v_BSKH, mask=mask, implementation=implementation
        )
        return jnp.sum(out_BTNH**2) + jnp.sum(out_BTNH), out_BTNH

    grads, out_BTNH = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(
        q_BTNH, k_BSKH, v_BSKH
    )
    assert np.all(np.asarray(out_BTNH)[0, 1] == 0.0) and np.all(np.asarray(out_BTNH)[1] == 0.0)
    assert np.all(np.abs(np.asarray(out_BTNH)[0, 0]) > 0.0)
    for grad in grads:
        assert np.all(np.isfinite(grad))
    dq_BTNH, dk_BSKH, dv_BSKH = (np.asarray(g) for g in grads)
    assert np.all(dq_BTNH[0, 1] == 0.0) and np.all(dq_BTNH[1] == 0.0)
    assert np.all(dk_BSKH[1] == 0.0) and np.all(dv_BSKH[1] == 0.0)


def grads_of(attention, inputs, mask, bias, scale):
    """(out, (dq, dk, dv, dbias, dscale)) of ⟨attention(q, k, v), dout⟩."""

    def loss(q_BTNH, k_BSKH, v_BSKH, bias, scale):
        out_BTNH = attention(q_BTNH, k_BSKH, v_BSKH, mask=mask, bias=bias, scale=scale)
        return jnp.vdot(out_BTNH, inputs["dout_BTNH"]), out_BTNH

    args = (inputs["q_BTNH"], inputs["k_BSKH"], inputs["v_BSKH"], bias, scale)
    grads, out_BTNH = jax.grad(loss, argnums=(0, 1, 2, 3, 4), has_aux=True)(*args)
    return out_BTNH, grads


@functools.partial(jax.jit, static_argnames="is_causal")
def xla_grads(inputs, mask, bias, is_causal, scale):
    attention = functools.partial(
        ops.dot_product_attention, is_causal=is_causal, implementation="xla"
    )
    return grads_of(attention, inputs, mask, bias, scale)


def assert_same_outputs_and_grads(chunked_result, xla_result):
    (out_chunked, grads_chunked), (out_xla, grads_xla) = chunked_result, xla_result
    np.testing.assert_allclose(out_chunked, out_xla, atol=1e-5, rtol=1e-5)
    for grad_chunked, grad_xla, what in zip(
        grads_chunked, grads_xla, ["q", "k", "v", "bias", "scale"], strict=True
    ):
        if grad_xla is None:
            assert grad_chunked is None, what
        else:
            np.testing.assert_allclose(grad_chunked, grad_xla, atol=1e-5, rtol=1e-5, err_msg=what)


@pytest.mark.parametrize(
    "name, variant",
    [pytest.param(name, jax.jit, id=f"{name}-jit") for name in CASES]
    # Eager chunked runs compile every loop anew; one case covers the unjitted path.
    + [pytest.param("gqa_causal_padding_bias", lambda f: f, id="gqa_causal_padding_bias-nojit")],
)
def test_chunked_matches_xla_outputs_and_gradients(name, variant):
    inputs, options = random_case(name, seed=100 + len(name))
    if name == "mha":
        # The public entry point with its default blocks (one block at these lengths).
        attention = functools.partial(ops.dot_product_attention, implementation="chunked")
    else:
        # Blocks that divide neither length: padding, partial blocks and causal skipping occur.
        attention = functools.partial(chunked.chunked_attention, block_q=3, block_k=4)
    attention = functools.partial(attention, is_causal=options["is_causal"])
    scale = jnp.float32(0.4)
    assert_same_outputs_and_grads(
        variant(functools.partial(grads_of, attention))(
            inputs, options["mask"], options["bias"], scale
        ),
        xla_grads(inputs, **options, scale=scale),
    )


def test_chunked_bfloat16_accumulates_in_float32():
    inputs, options = random_case("gqa_causal", seed=3)
    q_BTNH, k_BSKH, v_BSKH = (
        inputs[name].astype(jnp.bfloat16) for name in ("q_BTNH", "k_BSKH", "v_BSKH")
    )
    attention = functools.partial(chunked.chunked_attention, is_causal=True, block_q=3, block_k=4)
    out_BTNH = jax.jit(attention)(q_BTNH, k_BSKH, v_BSKH)
    out_ref, _ = reference_attention(
        q_BTNH.astype(jnp.float32),
        k_BSKH.astype(jnp.float32),
        v_BSKH.astype(jnp.float32),
        is_causal=True,
    )
    assert out_BTNH.dtype == jnp.bfloat16
    np.testing.assert_allclose(out_BTNH.astype(np.float32), out_ref, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize(
    "attention",
    [
        pytest.param(functools.partial(ops.dot_product_attention, implementation="xla"), id="xla"),
        pytest.param(
            functools.partial(chunked.chunked_attention, block_q=2, block_k=3), id="chunked"
        ),
    ],
)
def test_causal_output_has_zero_gradient_from_later_positions(attention):
    rng = np.random.default_rng(5)
    T, N, K, H = 7, 4, 2, 4
    q_BTNH = jnp.asarray(rng.normal(size=(2, T, N, H)), jnp.float32)
    k_BSKH, v_BSKH = (jnp.asarray(rng.normal(size=(2, T, K, H)), jnp.float32) for _ in range(2))

    @jax.jit
    def grads_of_position(t, q_BTNH, k_BSKH, v_BSKH):
        def out_at_t(q_BTNH, k_BSKH, v_BSKH):
            out_BTNH = attention(q_BTNH, k_BSKH, v_BSKH, is_causal=True)
            return jnp.sum(out_BTNH[:, t] ** 2)

        return jax.grad(out_at_t, argnums=(0, 1, 2))(q_BTNH, k_BSKH, v_BSKH)

    for t in range(T):
        dq_BTNH, dk_BSKH, dv_BSKH = (
            np.asarray(g) for g in grads_of_position(t, q_BTNH, k_BSKH, v_BSKH)
        )
        assert np.all(dq_BTNH[:, t + 1 :] == 0.0) and np.all(dq_BTNH[:, :t] == 0.0)
        assert np.all(dk_BSKH[:, t + 1 :] == 0.0) and np.all(dv_BSKH[:, t + 1 :] == 0.0)
        # ...and does depend on the earlier ones (the output at t = 0 is v_0, whatever q_0).
        assert np.all(dv_BSKH[:, : t + 1] != 0.0) and (t == 0 or np.any(dq_BTNH[:, t] != 0.0))


def test_chunked_intermediates_are_linear_in_length():
    """No array in the forward or backward pass holds T×S elements, and a (B, 1, 1, S) padding
    mask is never broadcast to (B, N, T, S)."""
    B, T, N, K, H = 1, 1024, 2, 1, 8
    q = jax.ShapeDtypeStruct((B, T, N, H), jnp.float32)
    kv = jax.ShapeDtypeStruct((B, T, K, H), jnp.float32)
    mask = jax.ShapeDtypeStruct((B, 1, 1, T), jnp.bool_)

    def loss(q_BTNH, k_BSKH, v_BSKH, mask):
        out_BTNH = chunked.chunked_attention(
            q_BTNH, k_BSKH, v_BSKH, mask=mask, is_causal=True, block_q=64, block_k=128
        )
        return jnp.sum(out_BTNH)

    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(q, kv, kv, mask)

    def sizes(jaxpr):
        for eqn in jaxpr.eqns:
            yield from (np.prod(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape"))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                yield from sizes(sub)

    largest = max(sizes(jaxpr.jaxpr))
    assert N * 64 * 128 <= largest < T * T // 16


def test_chunked_dropout_scales_kept_weights_and_regenerates_them_in_backward():
    """With one-hot values (v_s = e_s, so H = S) each output row is its row of dropped attention
    weights, and the keep mask and its 1 / (1 − rate) scaling can be read off the output."""
    rng = np.random.default_rng(11)
    B, T, S, N, K, rate = 16, 12, 8, 2, 1, 0.3
    q_BTNH = jnp.asarray(rng.normal(size=(B, T, N, S)), jnp.float32)
    k_BSKH = jnp.asarray(rng.normal(size=(B, S, K, S)), jnp.float32)
    bias = jnp.asarray(rng.normal(size=(1, N, T, S)), jnp.float32)
    one_hot_BSKH = jnp.broadcast_to(jnp.eye(S)[None, :, None, :], (B, S, K, S))

    def dropped(q_BTNH, k_BSKH, v_BSKH, bias, dropout_rng):
        return chunked.chunked_attention(
            q_BTNH,
            k_BSKH,
            v_BSKH,
            bias=bias,
            dropout_rate=rate,
            dropout_rng=dropout_rng,
            block_q=5,
            block_k=3,
        )

    rng_a, rng_b = jax.random.split(jax.random.key(0))
    dropped_BTNS, dropped_b_BTNS = (
        np.asarray(jax.jit(dropped)(q_BTNH, k_BSKH, one_hot_BSKH, bias, r)) for r in (rng_a, rng_b)
    )
    _, weights_BNTS = reference_attention(q_BTNH, k_BSKH, one_hot_BSKH, bias=bias)
    kept_BTNS = dropped_BTNS != 0.0
    # Each kept weight is scaled by exactly 1 / (1 − rate); the keep rate is 1 − rate (±4σ).
    expected_BTNS = weights_BNTS.transpose(0, 2, 1, 3) / (1.0 - rate)
    np.testing.assert_allclose(dropped_BTNS[kept_BTNS], expected_BTNS[kept_BTNS], rtol=1e-5)
    assert abs(kept_BTNS.mean() - (1.0 - rate)) < 4 * np.sqrt(rate * (1 - rate) / kept_BTNS.size)
    assert not np.array_equal(kept_BTNS, dropped_b_BTNS != 0.0)

    # Gradients: the backward pass must redraw the forward's mask, so they equal autodiff of
    # softmax(logits) ∘ keep / (1 − rate) V with the mask read off above, for fresh values.
    keep_BNTS = jnp.asarray(kept_BTNS.transpose(0, 2, 1, 3))

    def reference(q_BTNH, k_BSKH, v_BSKH, bias):
        logits_BNTS = jnp.einsum("BTNH,BSNH->BNTS", q_BTNH, jnp.repeat(k_BSKH, N // K, axis=2))
        weights_BNTS = jax.nn.softmax(logits_BNTS / np.sqrt(S) + bias, axis=-1)
        probs_BNTS = jnp.where(keep_BNTS, weights_BNTS / (1.0 - rate), 0.0)
        return jnp.einsum("BNTS,BSNH->BTNH", probs_BNTS, jnp.repeat(v_BSKH, N // K, axis=2))

    @jax.jit
    def outputs_and_grads(*args, dout_BTNH):
        results = []
        for f in (functools.partial(dropped, dropout_rng=rng_a), reference):
            out_BTNH, vjp = jax.vjp(f, *args)
            results.append((out_BTNH, vjp(dout_BTNH)))
        return results

    v_BSKH, dout_BTNH = (
        jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in [(B, S, K, S), (B, T, N, S)]
    )
    (out, grads), (out_ref, grads_ref) = outputs_and_grads(
        q_BTNH, k_BSKH, v_BSKH, bias, dout_BTNH=dout_BTNH
    )
    np.testing.assert_allclose(out, out_ref, atol=1e-5, rtol=1e-5)
    for grad, grad_ref in zip(grads, grads_ref, strict=True):
        np.testing.assert_allclose(grad, grad_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "shapes, kwargs, message",
    [
        ([(1, 4, 2, 8), (1, 5, 2, 8), (1, 6, 2, 8)], {}, "do not match"),
        ([(1, 4, 2, 8), (1, 5, 2, 4), (1, 5, 2, 4)], {}, "do not match"),
        ([(2, 4, 2, 8), (1, 5, 2, 8), (1, 5, 2, 8)], {}, "do not match"),
        ([(1, 4, 3, 8), (1, 5, 2, 8), (1, 5, 2, 8)], {}, "multiple"),
        ([(1, 4, 2, 8), (1, 5, 2, 8), (1, 5, 2, 8)], {"mask": np.ones((1, 4, 5), bool)}, "mask"),
        ([(1, 4, 2, 8), (1, 5, 2, 8), (1, 5, 2, 8)], {"implementation": "flash"}, "one of"),
        ([(1, 4, 2, 8), (1, 5, 2, 8), (1, 5, 2, 8)], {"dropout_rate": 0.1}, "dropout_rng"),
        (
            [(1, 4, 2, 8), (1, 5, 2, 8), (1, 5, 2, 8)],
            {"implementation": "chunked", "return_weights": True},
            "return_weights",
        ),
        (
            [(1, 4, 4, 8), (1, 5, 2, 8), (1, 5, 2, 8)],
            {"implementation": "chunked", "mask": np.ones((1, 2, 4, 5), bool)},
            "mask",
        ),
    ],
)
def test_bad_inputs_raise(shapes, kwargs, message):
    q_BTNH, k_BSKH, v_BSKH = (jnp.zeros(shape) for shape in shapes)
    with pytest.raises(ValueError, match=message):
        ops.dot_product_attention(q_BTNH, k_BSKH, v_BSKH, **kwargs)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="checks the error off GPU")
def test_cudnn_off_gpu_raises():
    x_BTNH = jnp.zeros((1, 4, 2, 8))
    with pytest.raises(ValueError, match="GPU"):
        ops.dot_product_attention(x_BTNH, x_BTNH, x_BTNH, implementation="cudnn")


@pytest.mark.gpu
@pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU")
def test_cudnn_matches_xla_on_gpu():
    inputs, options = random_case("gqa_causal_padding_bias", seed=1)
    q_BTNH, k_BSKH, v_BSKH = (
        inputs[name].astype(jnp.bfloat16) for name in ("q_BTNH", "k_BSKH", "v_BSKH")
    )
    outs = [
        ops.dot_product_attention(q_BTNH, k_BSKH, v_BSKH, implementation=impl, **options)
        for impl in ("cudnn", "xla")
    ]
    np.testing.assert_allclose(*(o.astype(np.float32) for o in outs), atol=2e-2, rtol=2e-2)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU twin of the GPU dispatch")
def test_dispatch_picks_chunked_for_long_sequences_on_cpu(monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append(args[0].shape[1])
        return chunked_attention(*args, **kwargs)

    chunked_attention = chunked.chunked_attention
    monkeypatch.setattr(chunked, "chunked_attention", spy)

    def dispatched(T, **kwargs):
        x = jax.ShapeDtypeStruct((1, T, 2, 8), jnp.float32)
        return jax.eval_shape(functools.partial(ops.dot_product_attention, **kwargs), x, x, x)

    dispatched(8)
    dispatched(4096, return_weights=True)
    assert calls == []
    dispatched(4096)
    assert calls == [4096]
