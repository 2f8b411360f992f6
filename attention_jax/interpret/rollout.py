"""Attention rollout and attention flow (Abnar & Zuidema 2020, "Quantifying Attention Flow in
Transformers"), from the weights every attention layer sows (`Task.attention_weights`).

Section 3: a residual connection carries each token to the next layer alongside attention, so
layer l's attention graph is the head-averaged weights plus the identity, rows renormalised:

    Â_l = normalise(0.5 W̄_l + 0.5 I),   W̄_l = (1/N) Σ_n W_l,n.

Rollout (eq. 1) multiplies them from the bottom up, Ã_L = Â_L Â_{L−1} ··· Â_1: row t of Ã_L
is how much of token t after the last layer comes from each input token s. Flow treats the
layers as a graph whose nodes are (layer l, token t), with an edge (l − 1, s) → (l, t) of
capacity Â_l[t, s]; the flow from input s to output t is the maximum flow between those two
nodes, which this module solves as the linear program of its definition (maximise what leaves
the source under the capacities, conserving flow at every inner node) with scipy's HiGHS.

Both hold for any stack of self-attention layers: BERT, the Transformer encoder, and causal
(GPT) stacks, whose lower-triangular weights give lower-triangular rollouts.

B batch, N heads, T query positions, S key positions (T = S here), Y layers.
"""

from collections.abc import Mapping, Sequence

import jax.numpy as jnp
import numpy as np
import scipy.optimize
import scipy.sparse


def layers(weights_by_path: Mapping[str, object], prefix: str) -> list:
    """The weights_BNTS of the layers whose path starts with `prefix`, in call order.

    `weights_by_path` is `Task.attention_weights(params, batch)`; `prefix` picks one stack,
    e.g. "bert/" (BERT) or "encoder/" (the Transformer's encoder).
    """
    stack = [w for path, w in weights_by_path.items() if path.startswith(prefix)]
    if not stack:
        raise ValueError(f"no attention layer under {prefix!r}; paths: {list(weights_by_path)}")
    if any(w.shape[-1] != w.shape[-2] for w in stack):
        raise ValueError(f"layers under {prefix!r} are not all self-attention (T ≠ S)")
    return stack


def residual_attention(weights_BNTS):
    """Â_BTS = normalise(0.5 W̄ + 0.5 I): the head-averaged weights with the residual (sec. 3)."""
    B, N, T, S = weights_BNTS.shape
    if T != S:
        raise ValueError(f"rollout needs self-attention weights, got T={T}, S={S}")
    a_BTS = 0.5 * weights_BNTS.astype(jnp.float32).mean(1) + 0.5 * jnp.eye(T)
    return a_BTS / a_BTS.sum(-1, keepdims=True)


def attention_rollout(weights: Sequence) -> jnp.ndarray:
    """Ã_BTS = Â_Y ··· Â_1 (eq. 1) of a stack of weights_BNTS, first layer first."""
    if not weights:
        raise ValueError("attention_rollout needs at least one layer")
    rollout_BTS = residual_attention(weights[0])
    for weights_BNTS in weights[1:]:
        rollout_BTS = jnp.einsum("BTU,BUS->BTS", residual_attention(weights_BNTS), rollout_BTS)
    return rollout_BTS


def attention_flow(weights: Sequence, target: int, *, mask_BS=None) -> np.ndarray:
    """flow_BS: the maximum flow from each input token s to output token `target` through the
    attention graph of a stack of weights_BNTS (first layer first); 0 where `mask_BS` is False.

    One linear program per (row, input token): use it on a few sentences, not a dataset.
    """
    capacity_BYTS = np.stack([np.asarray(residual_attention(w), np.float64) for w in weights], 1)
    B, _, T, _ = capacity_BYTS.shape
    if not 0 <= target < T:
        raise ValueError(f"target {target} is not a position of {T} tokens")
    mask_BS = np.ones((B, T), bool) if mask_BS is None else np.asarray(mask_BS, bool)
    flow_BS = np.zeros((B, T))
    for b in range(B):
        (real,) = np.nonzero(mask_BS[b])
        if target not in real:
            raise ValueError(f"row {b}: the target position {target} is masked")
        capacity_YTS = capacity_BYTS[b][:, real][:, :, real]
        sink = int(np.searchsorted(real, target))
        for i, s in enumerate(real):
            flow_BS[b, s] = max_flow(capacity_YTS, i, sink)
    return flow_BS


def max_flow(capacity_YTS: np.ndarray, source: int, sink: int) -> float:
    """The maximum flow from node (0, source) to node (Y, sink) of the layered graph whose edge
    (l − 1, s) → (l, t) has capacity capacity_YTS[l − 1, t, s], as a linear program.

    Variable f[l, t, s] is the flow on that edge; only edges leaving the source enter layer 1 and
    only edges reaching the sink leave layer Y − 1 (upper bounds 0 elsewhere); every node of
    layers 1 … Y − 1 conserves flow: Σ_s f[l − 1, u, s] = Σ_t f[l, t, u].
    """
    Y, T, _ = capacity_YTS.shape
    upper_YTS = np.array(capacity_YTS, np.float64)
    upper_YTS[0][:, np.arange(T) != source] = 0.0
    upper_YTS[-1][np.arange(T) != sink] = 0.0
    edge_YTS = np.arange(Y * T * T).reshape(Y, T, T)
    layer, node = np.meshgrid(np.arange(1, Y), np.arange(T), indexing="ij")
    row = np.broadcast_to(((layer - 1) * T + node)[..., None], (Y - 1, T, T))
    inflow = edge_YTS[layer - 1, node, :]  # edges into (layer, node)
    outflow = edge_YTS[layer, :, node]  # edges out of (layer, node)
    conservation = scipy.sparse.coo_matrix(
        (
            np.concatenate([np.ones(row.size), -np.ones(row.size)]),
            (
                np.concatenate([row.ravel(), row.ravel()]),
                np.concatenate([inflow.ravel(), outflow.ravel()]),
            ),
        ),
        shape=((Y - 1) * T, Y * T * T),
    )
    leaving_source = np.zeros(Y * T * T)
    leaving_source[edge_YTS[0, :, source]] = -1.0  # linprog minimises
    result = scipy.optimize.linprog(
        leaving_source,
        A_eq=conservation if Y > 1 else None,
        b_eq=np.zeros((Y - 1) * T) if Y > 1 else None,
        bounds=np.stack([np.zeros(Y * T * T), upper_YTS.ravel()], 1),
        method="highs",
    )
    if result.status != 0:
        raise ValueError(f"max-flow linear program failed: {result.message}")
    return float(-result.fun)
