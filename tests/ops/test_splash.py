"""The Pallas splash kernel (`implementation="splash"`) against `implementation="xla"`: outputs
and gradients to q, k and v. On CPU the kernel runs in Pallas's interpreter (`interpret=True`;
JAX 0.10.2's TPU interpret mode, `pltpu.force_tpu_interpret_mode`, fails on the batched kernel's
grid); on a TPU the compiled kernel runs too.

B batch, T query length, S key length, N query heads, K key/value heads, H head dim.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops
from attention_jax.ops import splash

# Interpreted float32 against the float32 einsum (highest precision, tests/conftest.py).
TOLERANCE = dict(atol=2e-5, rtol=2e-5)

# (B, T, S, N, K, H, is_causal, mask kind, block): the layouts our models pass, with blocks that
# split the lengths so that causal block skipping and several key blocks occur.
CASES = {
    "gqa_causal_padding": (2, 256, 256, 4, 2, 64, True, "padding", 128),
    "mqa_cross_segments": (2, 128, 256, 2, 1, 64, False, "segments", 128),
    "mha_causal_packed": (1, 256, 256, 2, 2, 128, True, "packed", 128),
    "gqa_no_mask_default_blocks": (1, 128, 128, 4, 2, 64, False, None, splash.BLOCK),
}


def random_case(name, seed):
    """Inputs, the splash keyword arguments, and the equivalent dense mask for xla.

    Padding masks drop random keys and the first three (so that, causal, the first queries
    have no key) and blank one example out whole; query segments include one with no keys and
    padding (0), so zero rows occur in every mask kind.
    """
    B, T, S, N, K, H, is_causal, mask_kind, _ = CASES[name]
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return jnp.asarray(rng.normal(size=shape), jnp.float32)

    inputs = dict(
        q_BTNH=normal(B, T, N, H),
        k_BSKH=normal(B, S, K, H),
        v_BSKH=normal(B, S, K, H),
        dout_BTNH=normal(B, T, N, H),
    )
    options, dense_mask = dict(is_causal=is_causal), None
    if mask_kind == "padding":
        valid_BS = rng.random((B, S)) < 0.8
        valid_BS[0, :3], valid_BS[-1] = False, False
        options["mask"] = dense_mask = jnp.asarray(valid_BS)[:, None, None, :]
    elif mask_kind in ("segments", "packed"):
        if mask_kind == "segments":
            segment_q_BT, segment_k_BS = rng.integers(0, 4, (B, T)), rng.integers(0, 3, (B, S))
        else:  # sorted runs of ids, as packing makes them, then padding
            segment_q_BT = np.sort(rng.integers(1, 4, (B, T)), axis=1)
            segment_q_BT[:, -T // 5 :] = 0
            segment_k_BS = segment_q_BT
        segment_ids = (jnp.asarray(segment_q_BT), jnp.asarray(segment_k_BS))
        options["segment_ids"] = segment_ids
        dense_mask = ops.segment_mask(*segment_ids)[:, None]
    return inputs, options, dense_mask


def outputs_and_grads(attention, inputs):
    """(out, (dq, dk, dv)) of ⟨attention(q, k, v), dout⟩."""
    out_BTNH, vjp = jax.vjp(attention, inputs["q_BTNH"], inputs["k_BSKH"], inputs["v_BSKH"])
    return out_BTNH, vjp(inputs["dout_BTNH"])


def xla_outputs_and_grads(inputs, dense_mask, is_causal, scale):
    attention = functools.partial(
        ops.dot_product_attention,
        mask=dense_mask,
        is_causal=is_causal,
        scale=scale,
        implementation="xla",
    )
    return jax.jit(outputs_and_grads, static_argnums=0)(attention, inputs)


def assert_close(result, expected, tolerance):
    (out, grads), (out_ref, grads_ref) = result, expected
    np.testing.assert_allclose(out, out_ref, **tolerance)
    for grad, grad_ref, what in zip(grads, grads_ref, "qkv", strict=True):
        np.testing.assert_allclose(grad, grad_ref, **tolerance, err_msg=f"d{what}")


@pytest.mark.parametrize("name", list(CASES))
def test_interpreted_kernel_matches_xla(name):
    inputs, options, dense_mask = random_case(name, seed=len(name))
    block = CASES[name][-1]
    scale = 0.3
    attention = functools.partial(
        splash.splash_attention,
        **options,
        scale=scale,
        block_q=block,
        block_k=block,
        interpret=True,
    )
    result = jax.jit(outputs_and_grads, static_argnums=0)(attention, inputs)
    expected = xla_outputs_and_grads(inputs, dense_mask, options["is_causal"], scale)
    assert np.any(np.asarray(expected[0]) == 0.0) == (dense_mask is not None)
    assert_close(result, expected, TOLERANCE)


@pytest.mark.tpu
@pytest.mark.skipif(jax.default_backend() != "tpu", reason="needs a TPU")
@pytest.mark.parametrize("name", ["gqa_causal_padding", "mqa_cross_segments"])
def test_compiled_kernel_matches_xla_on_tpu(name):
    """Compiled, through the public entry point (its CPU twin is the interpreted test); the
    kernel's matmuls may use the TPU's bfloat16 passes, hence the looser tolerance."""
    inputs, options, dense_mask = random_case(name, seed=len(name))
    attention = functools.partial(ops.dot_product_attention, **options, implementation="splash")
    result = jax.jit(outputs_and_grads, static_argnums=0)(attention, inputs)
    expected = xla_outputs_and_grads(inputs, dense_mask, options["is_causal"], None)
    assert_close(result, expected, dict(atol=2e-2, rtol=2e-2))


@pytest.mark.parametrize("implementation", ["xla", "chunked"])
def test_segment_ids_mean_the_segment_mask(implementation):
    inputs, options, dense_mask = random_case("mqa_cross_segments", seed=0)
    args = (inputs["q_BTNH"], inputs["k_BSKH"], inputs["v_BSKH"])
    out_BTNH = ops.dot_product_attention(
        *args, segment_ids=options["segment_ids"], implementation=implementation
    )
    out_ref = ops.dot_product_attention(*args, mask=dense_mask, implementation="xla")
    np.testing.assert_allclose(out_BTNH, out_ref, **TOLERANCE)


def test_none_picks_splash_on_tpu_where_the_kernel_applies(monkeypatch):
    """The dispatch as a TPU sees it: traced only, with the kernel replaced by a spy."""
    calls = []

    def spy(q_BTNH, k_BSKH, v_BSKH, **kwargs):
        calls.append(q_BTNH.shape[1])
        return q_BTNH

    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    monkeypatch.setattr(splash, "splash_attention", spy)

    def dispatched(T, **kwargs):
        x = jax.ShapeDtypeStruct((2, T, 2, 8), jnp.float32)
        return jax.eval_shape(functools.partial(ops.dot_product_attention, **kwargs), x, x, x)

    dispatched(256, is_causal=True, mask=jnp.ones((2, 1, 1, 256), bool))
    dispatched(128, segment_ids=(jnp.ones((2, 128), int),) * 2)
    assert calls == [256, 128]
    dispatched(100)
    dispatched(128, mask=jnp.ones((128, 128), bool))
    dispatched(128, mask=jnp.ones((2, 1, 128, 128), bool))
    dispatched(128, bias=jnp.zeros((128, 128)))
    dispatched(128, dropout_rate=0.1, dropout_rng=jax.random.key(0))
    dispatched(128, return_weights=True)
    assert calls == [256, 128]


@pytest.mark.parametrize(
    "T, kwargs, message",
    [
        (128, {}, "needs a TPU"),
        (128, {"bias": jnp.zeros((128, 128))}, "no bias"),
        (128, {"dropout_rate": 0.1, "dropout_rng": jax.random.key(0)}, "no attention dropout"),
        (128, {"segment_ids": (jnp.ones((1, 128), int), jnp.ones((1, 64), int))}, "segment_ids"),
    ],
)
def test_bad_inputs_raise(T, kwargs, message):
    x_BTNH = jnp.zeros((1, T, 2, 8))
    with pytest.raises(ValueError, match=message):
        ops.dot_product_attention(x_BTNH, x_BTNH, x_BTNH, implementation="splash", **kwargs)


@pytest.mark.parametrize(
    "T, mask, message",
    [
        (100, None, "multiples of 128"),
        (128, jnp.ones((128, 128), bool), r"key padding mask \(B, 1, 1, S\), not \(128, 128\)"),
        (128, jnp.ones((1, 2, 1, 128), bool), "key padding mask"),
    ],
)
def test_masks_the_kernel_cannot_express_raise(T, mask, message):
    x_BTNH = jnp.zeros((1, T, 2, 8))
    with pytest.raises(ValueError, match=message):
        splash.splash_attention(x_BTNH, x_BTNH, x_BTNH, mask=mask)
