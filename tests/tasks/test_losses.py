"""Sequence cross entropy with label smoothing (Vaswani et al. 2017, section 5.4) against a NumPy
float64 reference, alone and as the teacher-forced loss of a Transformer.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax.models import transformer as tr
from attention_jax.models.common import PAD_ID
from attention_jax.tasks.losses import sequence_cross_entropy
from tests.models.test_transformer import CONFIG, random_batch, random_params


def _smoothed_loss_reference(logits, labels, eps):
    logits, V = np.asarray(logits, np.float64), logits.shape[-1]
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    total, count = 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            if labels[b, t] == 0:
                continue
            q = np.full(V, eps / V)
            q[labels[b, t]] += 1.0 - eps
            total -= (q * logp[b, t]).sum()
            count += 1
    return total / count, count


def _padded_loss(logits_BTV, labels_BT, eps):
    return sequence_cross_entropy(logits_BTV, labels_BT, labels_BT != PAD_ID, label_smoothing=eps)


@pytest.mark.parametrize("fn", [jax.jit, lambda f: f], ids=["jit", "eager"])
@pytest.mark.parametrize("B,T,V,eps", [(2, 5, 7, 0.1), (3, 4, 11, 0.0), (1, 6, 5, 0.3)])
def test_label_smoothed_cross_entropy_matches_numpy(fn, B, T, V, eps):
    rng = np.random.default_rng(B * T)
    logits = rng.normal(size=(B, T, V)).astype(np.float32) * 3
    labels = rng.integers(1, V, size=(B, T))
    labels[0, -2:] = 0
    loss, metrics = fn(functools.partial(_padded_loss, eps=eps))(
        jnp.asarray(logits), jnp.asarray(labels)
    )
    expected, count = _smoothed_loss_reference(logits, labels, eps)
    np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-5)
    nll_sum, nll_count = metrics["nll"]
    np.testing.assert_allclose(
        nll_sum / nll_count, _smoothed_loss_reference(logits, labels, 0)[0], rtol=1e-5
    )
    assert nll_count == count and metrics["target_tokens"][0] == count
    correct = ((logits.argmax(-1) == labels) & (labels != 0)).sum()
    assert metrics["accuracy"] == (correct, count)


def test_teacher_forced_loss_shifts_targets_and_skips_padding():
    model = tr.Transformer(CONFIG)
    src_BS, tgt_BT = random_batch(np.random.default_rng(7), 2, 5, 5, 20)
    params = random_params(model, src_BS, tgt_BT[:, :-1])
    targets = np.asarray(tgt_BT).copy()
    targets[0, 3:] = 0

    @jax.jit
    def loss_fn(params, src_BS, targets_BT):
        logits_BTV = model.apply({"params": params}, src_BS, targets_BT[:, :-1])
        return _padded_loss(logits_BTV, targets_BT[:, 1:], 0.1)

    loss, metrics = loss_fn(params, src_BS, jnp.asarray(targets))
    logits = jax.jit(model.apply)({"params": params}, src_BS, jnp.asarray(targets[:, :-1]))
    expected, count = _smoothed_loss_reference(logits, targets[:, 1:], 0.1)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert count == 2 * 4 - 2 and metrics["nll"][1] == count
