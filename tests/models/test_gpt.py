"""GPT (Radford et al. 2018, 2019): the whole forward pass against float64 NumPy written from the
papers for every position scheme and both block types, with packed documents; causality and
document isolation through gradients; cached decoding equal to the full pass; chunked attention
equal to the reference; the initialisation and the presets.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import decoding, ops
from attention_jax.models import gpt
from tests.ops.reference import JIT_VARIANTS, alibi_slopes_reference, rotary_reference

CONFIG = gpt.GPTConfig(
    vocab_size=23,
    num_layers=2,
    d_model=16,
    num_heads=4,
    d_ff=24,
    max_len=24,
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
)
VARIANTS = {
    "learned-pre_ln": dict(position="learned"),
    "learned-post_ln": dict(position="learned", pre_ln=False),
    "sinusoidal-pre_ln": dict(position="sinusoidal"),
    "rope-pre_ln-gqa": dict(position="rope", num_kv_heads=2, rope_base=100.0),
    "alibi-post_ln": dict(position="alibi", pre_ln=False),
}


def random_params(config, seed=0):
    """Parameters shaped like the model's, drawn from NumPy (std 0.3) so every path matters."""
    model = gpt.GPT(config)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(rng.normal(0, 0.3, s.shape), jnp.float32), nn.unbox(shapes["params"])
    )


def numpy_gpt(config, params, tokens_BT, segments_BT, positions_BT):
    """GPT-1 eq. 2 / GPT-2 section 2.3 in float64, one position and one head at a time."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    B, T = tokens_BT.shape
    D, N = config.d_model, config.num_heads
    K, H = config.num_kv_heads or N, D // N

    def layer_norm(x, norm):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + config.layer_norm_eps) * norm["scale"] + norm["bias"]

    def gelu(x):  # the tanh approximation (Hendrycks & Gimpel 2016, section 2)
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))

    def attention(x_BTD, a):
        q = np.einsum("btd,dnh->btnh", x_BTD, a["query"]["kernel"]) + a["query"]["bias"]
        k = np.einsum("btd,dkh->btkh", x_BTD, a["key"]["kernel"]) + a["key"]["bias"]
        v = np.einsum("btd,dkh->btkh", x_BTD, a["value"]["kernel"]) + a["value"]["bias"]
        if config.position == "rope":
            q = rotary_reference(q, positions_BT, config.rope_base)
            k = rotary_reference(k, positions_BT, config.rope_base)
        slopes = alibi_slopes_reference(N)
        out = np.zeros((B, T, N, H))
        for b, i, n in np.ndindex(B, T, N):
            kv = n // (N // K)  # query head n reads key/value head n // G
            keep = [j for j in range(T) if j <= i and segments_BT[b, j] == segments_BT[b, i] != 0]
            if not keep:
                continue
            logits = np.array([q[b, i, n] @ k[b, j, kv] / math.sqrt(H) for j in keep])
            if config.position == "alibi":
                logits -= slopes[n] * (positions_BT[b, i] - positions_BT[b, keep])
            w = np.exp(logits - logits.max())
            out[b, i, n] = (w / w.sum()) @ v[b, keep, kv]
        return np.einsum("btnh,nhd->btd", out, a["out"]["kernel"]) + a["out"]["bias"]

    def mlp(x, layer):
        h = gelu(x @ layer["fc"]["kernel"] + layer["fc"]["bias"])
        return h @ layer["proj"]["kernel"] + layer["proj"]["bias"]

    h = p["wte"]["embedding"][tokens_BT]
    if config.position == "sinusoidal":
        h = h * np.sqrt(D)  # Vaswani et al. 2017, section 3.4
    if config.position == "learned":
        h = h + p["wpe"]["embedding"][positions_BT]
    elif config.position == "sinusoidal":
        i = np.arange(0, D, 2)
        angles = positions_BT[..., None] / 10000.0 ** (i / D)
        pe = np.zeros((B, T, D))
        pe[..., 0::2], pe[..., 1::2] = np.sin(angles), np.cos(angles)
        h = h + pe
    for i in range(config.num_layers):
        layer = p[f"layers_{i}"]
        if config.pre_ln:
            h = h + attention(layer_norm(h, layer["attention_norm"]), layer["attention"])
            h = h + mlp(layer_norm(h, layer["mlp_norm"]), layer)
        else:
            h = layer_norm(h + attention(h, layer["attention"]), layer["attention_norm"])
            h = layer_norm(h + mlp(h, layer), layer["mlp_norm"])
    if config.pre_ln:
        h = layer_norm(h, p["final_norm"])
    return h @ p["wte"]["embedding"].T


def packed_batch(seed=0, B=2, T=10):
    """Two rows of packed documents (segments 1, 2, …; 0 = padding) with restarting positions."""
    rng = np.random.default_rng(seed)
    segments = np.array([[1, 1, 1, 1, 2, 2, 2, 3, 3, 0], [1] * 6 + [2] * 4])[:B, :T]
    positions = np.zeros_like(segments)
    for b in range(B):
        for t in range(1, T):
            positions[b, t] = positions[b, t - 1] + 1 if segments[b, t] == segments[b, t - 1] else 0
    tokens = np.where(segments > 0, rng.integers(1, CONFIG.vocab_size, (B, T)), 0)
    return tokens.astype(np.int32), segments.astype(np.int32), positions.astype(np.int32)


@pytest.mark.parametrize("fn", JIT_VARIANTS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_matches_numpy_float64(variant, fn):
    config = dataclasses.replace(CONFIG, **VARIANTS[variant])
    params = random_params(config)
    tokens, segments, positions = packed_batch()
    model = gpt.GPT(config)
    got = fn(lambda *a: model.apply({"params": params}, *a))(tokens, segments, positions)
    expected = numpy_gpt(config, params, tokens, segments, positions)
    real = segments > 0
    np.testing.assert_allclose(np.asarray(got)[real], expected[real], atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_never_reach_future_tokens_or_other_documents(variant):
    config = dataclasses.replace(CONFIG, **VARIANTS[variant])
    params = random_params(config, seed=1)
    tokens, segments, positions = packed_batch(seed=1)
    model = gpt.GPT(config)
    zeros = {"embeddings": jnp.zeros(tokens.shape + (config.d_model,))}

    def output(perturbations, b, t):
        logits = model.apply(
            {"params": params, "perturbations": perturbations}, tokens, segments, positions
        )
        return logits[b, t].sum()

    grad = jax.jit(jax.grad(output))
    for b, t in [(0, 2), (0, 5), (1, 7), (1, 3)]:
        grads_BTD = grad(zeros, b, t)["embeddings"]
        norms_BT = np.abs(np.asarray(grads_BTD)).sum(-1)
        visible = (np.arange(tokens.shape[1]) <= t) & (segments[b] == segments[b, t])
        assert np.all(norms_BT[b, ~visible] == 0.0), (b, t)  # exactly zero
        assert np.all(norms_BT[b, visible] > 0.0), (b, t)
        assert np.all(norms_BT[1 - b] == 0.0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_decoding_equals_the_full_pass(variant):
    config = dataclasses.replace(CONFIG, **VARIANTS[variant])
    params = random_params(config, seed=2)
    model = gpt.GPT(config)
    tokens = jax.random.randint(jax.random.PRNGKey(3), (2, 12), 1, config.vocab_size)
    full_BTV = model.apply({"params": params}, tokens)
    P = 5
    for use_cache in (True, False):
        step_fn, state = model.start_decoding(
            params, tokens[:, :P], 12 - P + 1, use_cache=use_cache
        )
        step_fn = jax.jit(step_fn)
        for t in range(P - 1, 12):
            logits_BV, state = step_fn(state, tokens[:, t])
            np.testing.assert_allclose(logits_BV, full_BTV[:, t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_left_padded_prompts_decode_as_each_prompt_alone(variant):
    config = dataclasses.replace(CONFIG, **VARIANTS[variant])
    params = random_params(config, seed=7)
    model = gpt.GPT(config)
    lengths = [6, 2, 4]
    tokens = np.asarray(jax.random.randint(jax.random.PRNGKey(8), (3, 10), 1, config.vocab_size))
    prompt_BT = np.stack(
        [np.r_[np.zeros(6 - n, int), tokens[b, :n]] for b, n in enumerate(lengths)]
    )
    for use_cache in (True, False):
        step_fn, state = model.start_decoding(
            params, prompt_BT, 5, prompt_lengths_B=np.array(lengths), use_cache=use_cache
        )
        logits_BV, state = step_fn(state, prompt_BT[:, -1])
        outputs = [logits_BV]
        for t in range(4):  # each row continues with its own next tokens
            logits_BV, state = step_fn(state, tokens[np.arange(3), np.array(lengths) + t])
            outputs.append(logits_BV)
        for b, n in enumerate(lengths):
            alone_TV = model.apply({"params": params}, tokens[b : b + 1, : n + 4])[0]
            for t, logits_BV in enumerate(outputs):
                np.testing.assert_allclose(logits_BV[b], alone_TV[n - 1 + t], atol=1e-5, rtol=1e-5)


def test_greedy_continuation_equals_argmax_of_full_passes():
    config = dataclasses.replace(CONFIG, position="rope")
    params = random_params(config, seed=4)
    model = gpt.GPT(config)
    prompt = jnp.array([[3, 7, 9], [4, 4, 1]], jnp.int32)
    step_fn, state = model.start_decoding(params, prompt, 6)
    got = decoding.greedy(step_fn, state, bos_id=prompt[:, -1], eos_id=0, max_len=6)
    # Causal: the logits at t do not depend on the (zero) tokens after t in the buffer.
    apply = jax.jit(lambda tokens: model.apply({"params": params}, tokens))
    sequence = jnp.zeros((2, 9), jnp.int32).at[:, :3].set(prompt)
    for t in range(3, 9):
        sequence = sequence.at[:, t].set(jnp.argmax(apply(sequence)[:, t - 1], -1))
    np.testing.assert_array_equal(got, sequence[:, 3:])


@pytest.mark.parametrize("position", ["learned", "alibi"])
def test_chunked_attention_equals_xla_on_packed_rows(position):
    config = dataclasses.replace(CONFIG, position=position)
    params = random_params(config, seed=5)
    tokens, segments, positions = packed_batch(seed=5)
    outputs = [
        gpt.GPT(dataclasses.replace(config, attention_implementation=impl)).apply(
            {"params": params}, tokens, segments, positions
        )
        for impl in ("xla", "chunked")
    ]
    real = segments > 0
    np.testing.assert_allclose(outputs[0][real], outputs[1][real], atol=1e-5, rtol=1e-5)


def test_gpt2_initialisation_scales_residual_projections():
    config = gpt.GPTConfig(vocab_size=50, num_layers=4, d_model=32, num_heads=4, d_ff=128)
    params = nn.unbox(gpt.GPT(config).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32)))
    params = params["params"]
    layer = params["layers_0"]
    residual_std = 0.02 / math.sqrt(2 * 4)
    for name, x, std in [
        ("wte", params["wte"]["embedding"], 0.02),
        ("fc", layer["fc"]["kernel"], 0.02),
        ("proj", layer["proj"]["kernel"], residual_std),
        ("out", layer["attention"]["out"]["kernel"], residual_std),
    ]:
        assert abs(float(jnp.std(x)) - std) < 0.15 * std, name
    gpt1 = dataclasses.replace(config, pre_ln=False)
    params = nn.unbox(gpt.GPT(gpt1).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32)))
    params = params["params"]
    assert abs(float(jnp.std(params["layers_0"]["proj"]["kernel"])) - 0.02) < 0.003
    assert "final_norm" not in params


@pytest.mark.parametrize(
    "preset, params_millions",
    [("gpt1", 116.5), ("gpt2", 124.4), ("gpt2_medium", 354.8), ("gpt2_large", 774.0)],
)
def test_paper_presets_have_the_papers_sizes(preset, params_millions):
    config = getattr(gpt.GPTConfig, preset)()
    shapes = jax.eval_shape(
        gpt.GPT(config).init, jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32)
    )
    count = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
    assert abs(count / 1e6 - params_millions) < 0.5


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(position="relative"), "position must be one of"),
        (dict(num_heads=5), "multiple of num_heads"),
        (dict(num_kv_heads=3), "multiple of num_kv_heads"),
        (dict(d_model=12, num_heads=4, position="rope"), "even head dim"),
        (dict(attention_implementation="flash"), "attention_implementation"),
        (dict(dtype="float31"), "not a dtype name"),
    ],
)
def test_bad_configs_raise_one_line_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(CONFIG, **overrides)


def test_learned_positions_refuse_longer_inputs_and_decodes():
    params = random_params(CONFIG)
    model = gpt.GPT(CONFIG)
    with pytest.raises(ValueError, match="exceeds the learned positions"):
        model.apply({"params": params}, jnp.ones((1, CONFIG.max_len + 1), jnp.int32))
    with pytest.raises(ValueError, match="exceed the context"):
        model.start_decoding(params, jnp.ones((1, 20), jnp.int32), 10)


def test_flops_per_token_counts_the_matmuls():
    config = gpt.GPTConfig.gpt2()
    # 85M weights in the blocks' matmuls + the 38.6M output layer, 6 FLOPs each, + attention.
    blocks = 12 * (4 * 768 * 768 + 2 * 768 * 3072)
    expected = 6 * (blocks + 768 * 50257) + 12 * 12 * 1024 * 768
    assert gpt.flops_per_token(config, 1024) == expected


def test_head_mask_of_ones_changes_nothing_and_a_zero_removes_that_head():
    config = dataclasses.replace(CONFIG, position="rope")
    params = random_params(config, seed=6)
    tokens, segments, positions = packed_batch(seed=6)
    model = gpt.GPT(config)

    def logits(params, head_mask=None):
        return model.apply({"params": params}, tokens, segments, positions, head_mask=head_mask)

    ones = jnp.ones((config.num_layers, config.num_heads))
    np.testing.assert_array_equal(logits(params, ones), logits(params))
    # Masking head 2 of block 1 is the same as zeroing its slice of the output projection.
    zeroed = jax.tree.map(lambda x: x, params)
    out = zeroed["layers_1"]["attention"]["out"]
    out["kernel"] = out["kernel"].at[2].set(0.0)
    np.testing.assert_allclose(
        logits(params, ones.at[1, 2].set(0.0)), logits(zeroed), atol=1e-5, rtol=1e-5
    )
    with pytest.raises(ValueError, match="needs 2 layers"):
        logits(params, jnp.ones((3, config.num_heads)))


def test_packed_rows_reach_attention_as_segment_ids(monkeypatch):
    """Segment ids, not a dense mask, so a kernel that takes ids (TPU splash) can run them."""
    seen, attention, params = [], ops.dot_product_attention, random_params(CONFIG)

    def recording(*args, **kwargs):
        seen.append((kwargs["mask"], kwargs["segment_ids"]))
        return attention(*args, **kwargs)

    monkeypatch.setattr(ops, "dot_product_attention", recording)
    tokens, segments, positions = packed_batch(seed=9)
    gpt.GPT(CONFIG).apply({"params": params}, tokens, segments, positions)
    assert len(seen) == CONFIG.num_layers
    for mask, segment_ids in seen:
        assert mask is None
        np.testing.assert_array_equal(segment_ids[0], segments)
        np.testing.assert_array_equal(segment_ids[1], segments)
