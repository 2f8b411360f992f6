"""Transformer (Vaswani et al. 2017): paper sizes, sinusoids (section 3.5) against a NumPy
float64 reference, decoder causality through gradients, padding invariance, cached decoding equal
to full recomputation, beam search over the cache, the cross-attention weights, and both LayerNorm
placements learning a copy task. The loss is tested in tests/tasks/test_losses.py.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attention_jax import decoding
from attention_jax.models import transformer as tr
from attention_jax.models.common import PAD_ID
from attention_jax.tasks.losses import sequence_cross_entropy

ALLOWED_PARAM_AXES = {"vocab", "embed", "mlp", "heads", "kv", "norm", None}
BOS, EOS = 1, 2
CONFIG = tr.TransformerConfig(
    vocab_size=20,
    d_model=16,
    num_heads=4,
    num_kv_heads=2,
    d_ff=24,
    num_encoder_layers=1,
    num_decoder_layers=2,
    dropout_rate=0.0,
    max_len=16,
)


def random_params(model, *args, seed=0, std=0.2):
    """Parameters shaped by `model.init` but drawn from NumPy: LayerNorm scales 1, biases 0.

    Tracing init with `eval_shape` skips compiling the initialisers, which dominates CPU time.
    """
    rng = np.random.default_rng(seed)
    abstract = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)["params"])

    def fill(path, a):
        name = path[-1].key
        if name in ("scale", "bias"):
            return jnp.full(a.shape, 1.0 if name == "scale" else 0.0, a.dtype)
        return jnp.asarray(std * rng.normal(size=a.shape), a.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)


def random_batch(rng, B, S, T, V, src_lengths=None):
    """Source ids right-padded to `src_lengths`, decoder inputs [BOS] y₁ … with no padding."""
    src_BS = rng.integers(3, V, size=(B, S))
    if src_lengths is not None:
        src_BS[np.arange(S)[None, :] >= np.asarray(src_lengths)[:, None]] = 0
    tgt_BT = rng.integers(3, V, size=(B, T))
    tgt_BT[:, 0] = BOS
    return jnp.asarray(src_BS), jnp.asarray(tgt_BT)


@pytest.fixture(scope="module")
def model_and_params():
    model = tr.Transformer(CONFIG)
    src_BS, tgt_BT = random_batch(np.random.default_rng(0), 2, 5, 4, CONFIG.vocab_size)
    return model, random_params(model, src_BS, tgt_BT)


@functools.cache
def _forward(model):
    return jax.jit(lambda params, src, tgt: model.apply({"params": params}, src, tgt))


def _count(config):
    src, tgt = jnp.zeros((1, 4), jnp.int32), jnp.zeros((1, 3), jnp.int32)
    abstract = jax.eval_shape(tr.Transformer(config).init, jax.random.PRNGKey(0), src, tgt)
    return sum(x.size for x in jax.tree.leaves(nn.unbox(abstract["params"])))


def test_presets_have_the_papers_parameter_counts():
    # Table 3 with the shared 37,000-token BPE vocabulary of WMT 2014 En-De: 65M and 213M.
    assert _count(tr.TransformerConfig.base(37000)) == pytest.approx(65e6, rel=0.04)
    assert _count(tr.TransformerConfig.big(37000)) == pytest.approx(213e6, rel=0.01)
    small = tr.TransformerConfig.small(8000)
    assert (small.num_encoder_layers, small.d_model, small.num_heads) == (3, 256, 4)
    # Untied: separate source and target embeddings and an output projection (+ its bias).
    untied = dataclasses.replace(CONFIG, share_embeddings=False)
    assert _count(untied) - _count(CONFIG) == 2 * 20 * 16 + 20


def test_parameters_carry_only_allowed_logical_axis_names():
    src, tgt = jnp.zeros((1, 4), jnp.int32), jnp.zeros((1, 3), jnp.int32)
    abstract = jax.eval_shape(tr.Transformer(CONFIG).init, jax.random.PRNGKey(0), src, tgt)
    specs = jax.tree.leaves(nn.get_partition_spec(abstract["params"]))
    assert specs and all(set(spec) <= ALLOWED_PARAM_AXES for spec in specs)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(vocab_size=20, num_heads=3),
        dict(vocab_size=20, d_model=15, num_heads=5),
        dict(vocab_size=20, dtype="float33"),
    ],
)
def test_bad_config_raises(overrides):
    with pytest.raises(ValueError):
        tr.TransformerConfig(**overrides)


def test_label_smoothing_is_a_retired_field_not_an_architecture_setting():
    fields = {f.name for f in dataclasses.fields(tr.TransformerConfig)}
    assert "label_smoothing" not in fields and "RETIRED_FIELDS" not in fields
    assert tr.TransformerConfig.RETIRED_FIELDS == ("label_smoothing",)
    with pytest.raises(TypeError):
        tr.TransformerConfig(vocab_size=20, label_smoothing=0.1)


def test_too_long_source_raises(model_and_params):
    model, params = model_and_params
    src = jnp.ones((1, CONFIG.max_len + 1), jnp.int32)
    with pytest.raises(ValueError, match="max_len"):
        model.apply({"params": params}, src, src[:, :3])


def test_pre_ln_untied_bfloat16_model_returns_logits_and_sows_cross_attention():
    config = dataclasses.replace(
        CONFIG,
        pre_ln=True,
        share_embeddings=False,
        sow_attention_weights=True,
        num_kv_heads=None,
        dtype="bfloat16",
    )
    model = tr.Transformer(config)
    src_BS, tgt_BT = random_batch(np.random.default_rng(1), 3, 6, 5, 20, src_lengths=[6, 4, 2])
    params = random_params(model, src_BS, tgt_BT)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    logits_BTV, state = jax.jit(
        lambda p: model.apply({"params": p}, src_BS, tgt_BT, mutable=["intermediates"])
    )(params)
    assert logits_BTV.shape == (3, 5, 20) and logits_BTV.dtype == jnp.bfloat16
    assert np.all(np.isfinite(logits_BTV.astype(jnp.float32)))
    sown = state["intermediates"]["decoder"]["layers_1"]["cross_attention"]["attention_weights"]
    weights_BNTS = np.asarray(sown[0])
    assert weights_BNTS.shape == (3, 4, 5, 6)
    real_B11S = np.asarray(src_BS != 0)[:, None, None, :]
    np.testing.assert_allclose(weights_BNTS.sum(-1), 1.0, atol=1e-5)
    assert np.all(weights_BNTS[np.broadcast_to(~real_B11S, weights_BNTS.shape)] == 0.0)


def test_decoder_is_causal(model_and_params):
    """d logits_t / d (target input embedding at t') is exactly zero for every t' > t."""
    model, params = model_and_params
    src_BS, tgt_BT = random_batch(np.random.default_rng(3), 2, 5, 6, 20, src_lengths=[5, 3])

    def logits_from_perturbation(delta_BTD):
        def add_delta(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            is_target = args and getattr(args[0], "shape", None) == tgt_BT.shape
            if isinstance(context.module, tr.Embedder) and is_target:
                out = out + delta_BTD
            return out

        with nn.intercept_methods(add_delta):
            return model.apply({"params": params}, src_BS, tgt_BT)

    jacobian = jax.jit(jax.jacrev(logits_from_perturbation))(jnp.zeros((2, 6, 16)))
    # (B, T_out, V, B, T_in, D) -> influence of input (b', t') on output (b, t).
    influence = np.abs(np.asarray(jacobian)).sum(axis=(2, 5))
    for b in range(2):
        for t in range(6):
            assert np.all(influence[b, t, b, t + 1 :] == 0.0)
            assert np.all(influence[b, t, b, : t + 1] > 0.0)
            assert np.all(influence[b, t, 1 - b] == 0.0)


def test_padding_does_not_change_real_positions(model_and_params):
    model, params = model_and_params
    forward = _forward(model)
    src_BS, tgt_BT = random_batch(np.random.default_rng(4), 2, 5, 4, 20, src_lengths=[5, 2])
    logits = forward(params, src_BS, tgt_BT)
    padded_src = jnp.pad(src_BS, ((0, 0), (0, 3)))
    padded_tgt = jnp.pad(tgt_BT, ((0, 0), (0, 2)))
    np.testing.assert_allclose(forward(params, padded_src, padded_tgt)[:, :4], logits, atol=1e-5)


@pytest.mark.parametrize("use_cache", [True, False], ids=["cached", "recomputed"])
def test_step_by_step_decoding_equals_teacher_forced_logits(model_and_params, use_cache):
    model, params = model_and_params
    src_BS, tgt_BT = random_batch(np.random.default_rng(5), 2, 5, 4, 20, src_lengths=[5, 3])
    full_BTV = _forward(model)(params, src_BS, tgt_BT)

    @jax.jit
    def run(params):
        step_fn, state = model.start_decoding(params, src_BS, 4, use_cache=use_cache)
        _, logits_TBV = jax.lax.scan(lambda state, x: step_fn(state, x)[::-1], state, tgt_BT.T)
        return jnp.swapaxes(logits_TBV, 0, 1)

    np.testing.assert_allclose(run(params), full_BTV, atol=1e-5, rtol=1e-5)


def test_beam_search_over_the_cache_equals_beam_search_with_recomputation(model_and_params):
    """Reordering beams must carry each beam's key/value cache along with it."""
    model, params = model_and_params
    src_BS, _ = random_batch(np.random.default_rng(6), 3, 5, 1, 20, src_lengths=[5, 4, 2])

    @jax.jit
    def both(params):
        results = []
        for use_cache in (True, False):
            step_fn, state = model.start_decoding(params, src_BS, 6, use_cache=use_cache)
            results.append(
                decoding.beam_search(
                    step_fn, state, beam_size=3, bos_id=BOS, eos_id=EOS, max_len=6, alpha=0.6
                )
            )
        return results

    (seqs, scores), (seqs_recomputed, scores_recomputed) = both(params)
    np.testing.assert_array_equal(seqs, seqs_recomputed)
    np.testing.assert_allclose(scores, scores_recomputed, atol=1e-5)
    assert np.all(np.isfinite(scores))


@pytest.mark.parametrize("num_kv_heads", [2, None], ids=["grouped", "multi-head"])
def test_cross_attention_weights_are_the_last_layers_sown_heads(num_kv_heads):
    config = dataclasses.replace(CONFIG, num_kv_heads=num_kv_heads)
    model = tr.Transformer(config)
    src_BS, tgt_BT = random_batch(np.random.default_rng(8), 3, 6, 5, 20, src_lengths=[6, 4, 1])
    params = random_params(model, src_BS, tgt_BT, std=0.5)
    weights_BNTS = np.asarray(jax.jit(model.cross_attention_weights)(params, src_BS, tgt_BT))
    assert weights_BNTS.shape == (3, config.num_heads, 5, 6)

    sowing = tr.Transformer(dataclasses.replace(config, sow_attention_weights=True))
    _, state = sowing.apply({"params": params}, src_BS, tgt_BT, mutable=["intermediates"])
    decoder = state["intermediates"]["decoder"]
    assert set(decoder) == {"layers_0", "layers_1"}
    (sown_BNTS,) = decoder["layers_1"]["cross_attention"]["attention_weights"]
    np.testing.assert_allclose(weights_BNTS, sown_BNTS, atol=1e-6)
    (first_BNTS,) = decoder["layers_0"]["cross_attention"]["attention_weights"]
    assert not np.allclose(weights_BNTS, first_BNTS, atol=1e-3)  # the last layer, not any

    real_B11S = np.asarray(src_BS != PAD_ID)[:, None, None, :]
    np.testing.assert_allclose(weights_BNTS.sum(-1), 1.0, atol=1e-5)
    assert np.all(weights_BNTS[np.broadcast_to(~real_B11S, weights_BNTS.shape)] == 0.0)
    assert np.all(weights_BNTS[np.broadcast_to(real_B11S, weights_BNTS.shape)] > 0.0)


@pytest.mark.parametrize("pre_ln", [False, True], ids=["post-LN", "pre-LN"])
def test_learns_to_copy(pre_ln):
    V, B, S = 10, 32, 5
    config = tr.TransformerConfig(
        V,
        d_model=32,
        num_heads=4,
        d_ff=64,
        num_encoder_layers=1,
        num_decoder_layers=1,
        dropout_rate=0.0,
        max_len=16,
        pre_ln=pre_ln,
    )
    model, rng = tr.Transformer(config), np.random.default_rng(0)

    def batch():
        src = rng.integers(3, V, size=(B, S))
        targets = np.concatenate([np.full((B, 1), BOS), src, np.full((B, 1), EOS)], axis=1)
        return {"inputs": jnp.asarray(src), "targets": jnp.asarray(targets)}

    first = batch()
    params = random_params(model, first["inputs"], first["targets"][:, :-1])
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)

    def loss_fn(params, batch, rng):
        targets_BT = batch["targets"]
        logits_BTV = model.apply(
            {"params": params},
            batch["inputs"],
            targets_BT[:, :-1],
            deterministic=False,
            rngs={"dropout": rng},
        )
        labels_BT = targets_BT[:, 1:]
        return sequence_cross_entropy(
            logits_BTV, labels_BT, labels_BT != PAD_ID, label_smoothing=0.1
        )

    @jax.jit
    def train_step(params, opt_state, batch, rng):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for step in range(80):
        params, opt_state, loss = train_step(params, opt_state, batch(), jax.random.PRNGKey(step))
        losses.append(float(loss))
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses
