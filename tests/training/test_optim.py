"""Schedules, the weight-decay mask, AdamW, LAMB and SGD against NumPy float64 references."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from attention_jax import training
from attention_jax.models import bert, seq2seq_rnn, transformer
from attention_jax.tasks import bert_finetuning
from attention_jax.training import optim
from tests.training import tiny_classifier


def _config(**overrides):
    config = training.default_config()
    config.update({"learning_rate": 0.5, "warmup_steps": 4, "num_train_steps": 20, **overrides})
    return config


def _reference_schedule(kind, s, peak=0.5, warmup=4, total=20):
    warm = min(1.0, s / warmup)
    progress = min(max((s - warmup) / (total - warmup), 0.0), 1.0)
    decay = {
        "linear": 1.0 - progress,
        "bert_linear": 1.0 if s < warmup else min(max(1.0 - s / total, 0.0), 1.0),
        "inverse_sqrt": np.sqrt(warmup / max(s, warmup)),
        "cosine": 0.5 * (1.0 + np.cos(np.pi * progress)),
        "constant": 1.0,
    }[kind]
    return peak * warm * decay


@pytest.mark.parametrize("kind", ["linear", "bert_linear", "inverse_sqrt", "cosine", "constant"])
def test_schedules(kind):
    schedule = optim.make_schedule(_config(schedule=kind))
    steps = np.arange(0, 25)
    expected = [_reference_schedule(kind, s) for s in steps]
    np.testing.assert_allclose(jax.jit(jax.vmap(schedule))(steps), expected, rtol=1e-5, atol=1e-7)
    # Zero before the first update; the peak at the end of warmup, less 4/20 where the decay
    # starts at step 0 (google-research/bert's polynomial_decay under its warmup).
    peak = 0.5 * (1 - 4 / 20) if kind == "bert_linear" else 0.5
    assert float(schedule(4)) == pytest.approx(peak) and float(schedule(0)) == 0.0


def test_noam_without_warmup_decays_from_the_first_step():
    schedule = optim.make_schedule(_config(schedule="inverse_sqrt", warmup_steps=0))
    np.testing.assert_allclose([schedule(s) for s in (0, 1, 4, 16)], [0.5, 0.5, 0.25, 0.125])


def test_decay_mask_excludes_biases_and_layer_norm():
    model = tiny_classifier.TinyClassifier(tiny_classifier.TinyConfig())
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))
    mask = optim.decay_mask(nn.meta.unbox(params["params"]))
    flat = traverse_util.flatten_dict(mask, sep="/")
    assert flat["attention_0/query/kernel"] and flat["mlp_in_1/kernel"] and flat["token"]
    assert not flat["mlp_in_0/bias"] and not flat["classifier/bias"]
    assert not flat["ln_mlp_0/scale"] and not flat["ln_mlp_0/bias"]


def _tree():
    rng = np.random.default_rng(0)
    return {
        "dense": {"kernel": rng.normal(size=(3, 4)), "bias": rng.normal(size=(4,))},
        "norm": {"scale": rng.normal(size=(4,))},
    }


def _optimize(config, params, grads):
    """`params` after one float32 update of `make_optimizer(config)` per gradient tree."""
    tx = training.make_optimizer(config)
    params32 = jax.tree.map(jnp.float32, params)
    state = tx.init(params32)
    update = jax.jit(tx.update)
    for g in grads:
        updates, state = update(jax.tree.map(jnp.float32, g), state, params32)
        params32 = jax.tree.map(jnp.add, params32, updates)
    return params32


def _adam_direction(g, m, v, t, b1, b2, eps):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    return (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps), m, v


@pytest.mark.parametrize("kind", ["adamw", "lamb"])
def test_two_optimizer_steps_match_numpy(kind):
    config = _config(
        optimizer=kind,
        schedule="constant",
        warmup_steps=0,
        learning_rate=0.1,
        weight_decay=0.3,
        b1=0.8,
        b2=0.9,
        eps=1e-6,
        grad_clip_norm=1.5,
    )
    params = _tree()
    grads = [
        jax.tree.map(lambda p, s=s: np.full_like(p, s) * np.sign(p), params) for s in (2.0, -0.5)
    ]
    params32 = _optimize(config, params, grads)

    # Reference: clip by global norm, Adam direction, + decay (not on bias/scale), then for LAMB
    # the layer-wise trust ratio ‖w‖ / ‖u‖, times −lr.
    p = params
    m = jax.tree.map(np.zeros_like, p)
    v = jax.tree.map(np.zeros_like, p)
    for t, g in enumerate(grads, start=1):
        norm = np.sqrt(sum(np.sum(x * x) for x in jax.tree.leaves(g)))
        g = jax.tree.map(lambda x, n=norm: x * min(1.0, 1.5 / n), g)
        new_p, new_m, new_v = {}, {}, {}
        for module in p:
            new_p[module], new_m[module], new_v[module] = {}, {}, {}
            for name, w in p[module].items():
                u, mm, vv = _adam_direction(
                    g[module][name], m[module][name], v[module][name], t, 0.8, 0.9, 1e-6
                )
                if name == "kernel":
                    u = u + 0.3 * w
                if kind == "lamb":
                    u = u * np.linalg.norm(w) / np.linalg.norm(u)
                new_p[module][name], new_m[module][name], new_v[module][name] = w - 0.1 * u, mm, vv
        p, m, v = new_p, new_m, new_v
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), params32, p)


def _shipped_models():
    """Every model family and head we ship, in tiny sizes, with example inputs."""
    ids = jnp.zeros((1, 8), jnp.int32)
    bert_config = bert.BertConfig.tiny(50)
    bert_inputs = (ids, ids, jnp.ones((1, 8), jnp.int32))
    yield bert.BertForPreTraining(bert_config), (*bert_inputs, jnp.zeros((1, 2), jnp.int32))
    for head in (bert.BertModel, *(model for _, model in bert_finetuning.TASKS.values())):
        yield head(bert_config), bert_inputs
    for pre_ln in (False, True):
        config = transformer.TransformerConfig.tiny(50, pre_ln=pre_ln, share_embeddings=pre_ln)
        yield transformer.Transformer(config), (ids, ids)
    for cell in ("lstm", "gru"):
        for attention in seq2seq_rnn.ATTENTIONS:
            config = seq2seq_rnn.Seq2SeqRNNConfig.tiny(50, attention=attention, cell=cell)
            yield seq2seq_rnn.Seq2SeqRNN(config), (ids, ids)


# Every parameter name of the shipped models (layer indices as _i): weights, which decay, and
# biases and LayerNorm parameters, which do not. A new name fails the test until placed here.
WEIGHTS = ("kernel", "embedding", "v", "w", "w_query", "w_x_i", "u_i")
NO_DECAY = ("bias", "scale", "mlm_output_bias", "b_i")


def test_decay_mask_spares_every_bias_and_norm_parameter_of_every_shipped_model():
    """google-research/bert's rule: weight matrices and embeddings decay; biases (also
    `mlm_output_bias` and RNN gate biases) and LayerNorm parameters do not."""
    seen = set()
    for model, inputs in _shipped_models():
        params = jax.eval_shape(model.init, jax.random.PRNGKey(0), *inputs)["params"]
        params = nn.meta.unbox(params)
        mask = traverse_util.flatten_dict(optim.decay_mask(params), sep="/")
        for path in traverse_util.flatten_dict(params, sep="/"):
            name = re.sub(r"_\d+$", "_i", path.rpartition("/")[2])
            assert name in WEIGHTS + NO_DECAY, (type(model).__name__, path)
            assert mask[path] == (name in WEIGHTS), (type(model).__name__, path)
            seen.add(name)
    assert seen == set(WEIGHTS + NO_DECAY)


def test_bert_adamw_matches_google_research_bert():
    """optimization.py of google-research/bert, in float64: warmup then polynomial decay from
    step 0, global-norm clipping to 1, Adam without bias correction plus λw where decayed."""
    config = _config(
        optimizer="bert_adamw",
        schedule="bert_linear",
        learning_rate=0.1,
        warmup_steps=2,
        num_train_steps=5,
        weight_decay=0.3,
        eps=1e-6,
        grad_clip_norm=1.0,
    )
    params = _tree()
    rng = np.random.default_rng(1)
    grads = [jax.tree.map(lambda p: rng.normal(size=p.shape), params) for _ in range(4)]
    params32 = _optimize(config, params, grads)

    p = params
    m = jax.tree.map(np.zeros_like, p)
    v = jax.tree.map(np.zeros_like, p)
    for step, g in enumerate(grads):  # global_step before the update, as in train_op
        lr = 0.1 * (1 - step / 5) if step >= 2 else 0.1 * step / 2
        norm = np.sqrt(sum(np.sum(x * x) for x in jax.tree.leaves(g)))
        g = jax.tree.map(lambda x, n=norm: x * 1.0 / max(n, 1.0), g)
        m = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, m, g)
        v = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
        update = jax.tree.map(lambda m, v: m / (np.sqrt(v) + 1e-6), m, v)
        update["dense"]["kernel"] = update["dense"]["kernel"] + 0.3 * p["dense"]["kernel"]
        p = jax.tree.map(lambda w, u, lr=lr: w - lr * u, p, update)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), params32, p)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_is_heavy_ball_with_l2_on_the_decayed_weights(momentum):
    config = _config(
        optimizer="sgd", schedule="linear", momentum=momentum, weight_decay=0.3, warmup_steps=1
    )
    params = _tree()
    rng = np.random.default_rng(2)
    grads = [jax.tree.map(lambda p: rng.normal(size=p.shape), params) for _ in range(4)]
    params32 = _optimize(config, params, grads)

    p, m = params, jax.tree.map(np.zeros_like, params)
    for step, g in enumerate(grads):
        # L2 on the kernel only: biases and norms are spared.
        g["dense"]["kernel"] = g["dense"]["kernel"] + 0.3 * p["dense"]["kernel"]
        m = jax.tree.map(lambda m, g: momentum * m + g, m, g)
        lr = _reference_schedule("linear", step, warmup=1)
        p = jax.tree.map(lambda w, m, lr=lr: w - lr * m, p, m)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), params32, p)
