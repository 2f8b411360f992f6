"""Schedules, the weight-decay mask, AdamW and LAMB against NumPy float64 references."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from attention_jax import training
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
        "inverse_sqrt": np.sqrt(warmup / max(s, warmup)),
        "cosine": 0.5 * (1.0 + np.cos(np.pi * progress)),
        "constant": 1.0,
    }[kind]
    return peak * warm * decay


@pytest.mark.parametrize("kind", ["linear", "inverse_sqrt", "cosine", "constant"])
def test_schedules(kind):
    schedule = optim.make_schedule(_config(schedule=kind))
    steps = np.arange(0, 25)
    expected = [_reference_schedule(kind, s) for s in steps]
    np.testing.assert_allclose(jax.jit(jax.vmap(schedule))(steps), expected, rtol=1e-5, atol=1e-7)
    # Peak at the end of warmup, zero before the first update.
    assert float(schedule(4)) == pytest.approx(0.5) and float(schedule(0)) == 0.0


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
    tx = training.make_optimizer(config)
    params = _tree()
    grads = [
        jax.tree.map(lambda p, s=s: np.full_like(p, s) * np.sign(p), params) for s in (2.0, -0.5)
    ]
    params32 = jax.tree.map(jnp.float32, params)
    state = tx.init(params32)
    update = jax.jit(tx.update)
    for g in grads:
        updates, state = update(jax.tree.map(jnp.float32, g), state, params32)
        params32 = jax.tree.map(jnp.add, params32, updates)

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
