"""Attention rollout and flow (Abnar & Zuidema 2020): rollout against the product of the
residual-augmented attention matrices written out by hand, flow against networkx's max-flow."""

import networkx
import numpy as np
import pytest

from attention_jax.interpret import rollout
from tests.interpret.conftest import bert_batch


def test_rollout_of_two_layers_is_the_product_written_out():
    # Layer 1: heads [[1, 0], [.5, .5]] and [[0, 1], [.5, .5]] average to [[.5, .5], [.5, .5]],
    # so Â₁ = .5 W̄ + .5 I = [[.75, .25], [.25, .75]]. Layer 2: heads [[1, 0], [1, 0]] and
    # [[1, 0], [0, 1]] average to [[1, 0], [.5, .5]], so Â₂ = [[1, 0], [.25, .75]].
    w1 = np.array([[[[1, 0], [0.5, 0.5]], [[0, 1], [0.5, 0.5]]]])
    w2 = np.array([[[[1, 0], [1, 0]], [[1, 0], [0, 1]]]])
    # Â₂ Â₁ = [[1·.75 + 0·.25, 1·.25 + 0·.75], [.25·.75 + .75·.25, .25·.25 + .75·.75]]
    expected = np.array([[0.75, 0.25], [0.375, 0.625]])
    np.testing.assert_allclose(rollout.attention_rollout([w1, w2])[0], expected, atol=1e-7)


def _residual(weights_NTS):
    a = 0.5 * weights_NTS.mean(0) + 0.5 * np.eye(weights_NTS.shape[-1])
    return a / a.sum(-1, keepdims=True)


def _random_weights(rng, B, N, T, causal=False):
    logits = rng.normal(size=(B, N, T, T))
    if causal:
        logits = np.where(np.tril(np.ones((T, T), bool)), logits, -np.inf)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("causal", [False, True])
def test_rollout_is_the_product_of_every_layers_residual_attention(causal):
    rng = np.random.default_rng(0)
    weights = [_random_weights(rng, 2, 3, 5, causal) for _ in range(3)]
    got = np.asarray(rollout.attention_rollout(weights))
    for b in range(2):
        expected = np.eye(5)
        for w in weights:
            expected = _residual(w[b]) @ expected
        np.testing.assert_allclose(got[b], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[b].sum(-1), 1.0, rtol=1e-5)
    if causal:  # no token draws from a later one
        assert np.all(np.triu(got, 1) == 0)


def _networkx_flow(weights, b, source, sink, real):
    graph = networkx.DiGraph()
    for layer, w in enumerate(weights):
        a = _residual(w[b])
        for t in real:
            for s in real:
                graph.add_edge((layer, s), (layer + 1, t), capacity=float(a[t, s]))
    return networkx.maximum_flow_value(graph, (0, source), (len(weights), sink))


def test_flow_equals_networkx_max_flow_and_skips_masked_tokens():
    rng = np.random.default_rng(1)
    weights = [_random_weights(rng, 2, 2, 5) for _ in range(3)]
    mask_BS = np.ones((2, 5), bool)
    mask_BS[1, 3:] = False
    flow_BS = rollout.attention_flow(weights, 1, mask_BS=mask_BS)
    for b in range(2):
        real = list(np.nonzero(mask_BS[b])[0])
        for s in real:
            assert flow_BS[b, s] == pytest.approx(_networkx_flow(weights, b, s, 1, real), abs=1e-6)
    assert np.all(flow_BS[1, 3:] == 0)


def test_one_layer_flow_is_the_edge_capacity():
    w = _random_weights(np.random.default_rng(2), 1, 2, 4)
    np.testing.assert_allclose(rollout.attention_flow([w], 2)[0], _residual(w[0])[2], rtol=1e-6)


def test_layers_are_picked_by_path_prefix(bert_classifier):
    task, params = bert_classifier
    weights = task.attention_weights(params, bert_batch(np.random.default_rng(3)))
    stack = rollout.layers(weights, "bert/")
    assert len(stack) == task.model.config.num_layers
    assert all(w.shape == (3, 2, 8, 8) for w in stack)
    with pytest.raises(ValueError, match="no attention layer"):
        rollout.layers(weights, "encoder/")
    with pytest.raises(ValueError, match="self-attention"):
        rollout.layers({"decoder/cross": np.zeros((1, 1, 2, 3))}, "decoder/")
