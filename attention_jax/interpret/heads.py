"""Head importance by head masking (Michel, Levy & Neubig 2019, "Are Sixteen Heads Really Better
than One?").

Each head's output is multiplied by a gate ξ_h before the output projection
(`MultiHeadAttention(head_mask=...)`, threaded per layer through the models as `head_mask`
of shape (Y, N) or (B, Y, N)). Section 4.1: the importance of head h is the expected
sensitivity of the loss to its gate at ξ = 1,

    I_h = E_x | ∂L(x) / ∂ξ_h |,

normalised by its layer's ℓ2 norm (after Molchanov et al. 2017); pruning removes heads in
increasing order of importance and tracks the metric: how much of the model can go before it
drops.

B batch, Y layers, N heads per layer, C classes.
"""

import jax
import jax.numpy as jnp
import numpy as np

from attention_jax.data import batching


def head_importance(loss_fn, batches, num_layers: int, num_heads: int):
    """importance_YN = mean over examples of |∂L(x)/∂ξ| at ξ = 1.

    Args:
      loss_fn: (batch, head_mask_BYN) -> (loss_B, weight_B): each row's loss under its own
        gates and its weight (0 for padding rows).
      batches: an iterable of batches.
    """

    def summed(mask_BYN, batch):
        loss_B, weight_B = loss_fn(batch, mask_BYN)
        return loss_B.sum(), weight_B

    gradient = jax.jit(jax.grad(summed, has_aux=True))
    total_YN, count = np.zeros((num_layers, num_heads)), 0.0
    for batch in batches:
        B = len(next(iter(batch.values())))
        grad_BYN, weight_B = gradient(jnp.ones((B, num_layers, num_heads), jnp.float32), batch)
        total_YN += np.einsum("BYN,B->YN", np.abs(grad_BYN), weight_B)
        count += float(weight_B.sum())
    if not count:
        raise ValueError("head_importance got no examples")
    return total_YN / count


def normalise_by_layer(importance_YN):
    """importance_YN divided by its layer's ℓ2 norm, so that layers compare."""
    return importance_YN / np.linalg.norm(importance_YN, axis=1, keepdims=True)


def classification_loss(task, params, labels_key: str = "label"):
    """A `loss_fn` for `head_importance`: each row's cross-entropy −log p(label | x, ξ)."""

    def loss_fn(batch, head_mask_BYN):
        logits_BC = task.apply(params, batch, head_mask=head_mask_BYN).astype(jnp.float32)
        labels_B1 = batch[labels_key][:, None]
        nll_B = -jnp.take_along_axis(jax.nn.log_softmax(logits_BC), labels_B1, axis=1)[:, 0]
        return nll_B, batch["weight"]

    return loss_fn


def pruning_masks(importance_YN, counts):
    """head_mask_YN for each count in `counts`: the `count` least important heads set to 0."""
    order = np.argsort(np.asarray(importance_YN).ravel(), kind="stable")
    masks = []
    for count in counts:
        if not 0 <= count <= order.size:
            raise ValueError(f"cannot prune {count} of {order.size} heads")
        mask = np.ones(order.size, np.float32)
        mask[order[:count]] = 0.0
        masks.append(mask.reshape(np.shape(importance_YN)))
    return masks


def masked_predictor(task, batch_size: int):
    """predict(params, features, head_mask) -> the model's outputs on every row of `features`
    with heads gated by `head_mask`, as `Task.predict`; compiled once for every mask."""
    apply = jax.jit(lambda params, batch, mask: task.apply(params, batch, head_mask=mask))

    def predict(params, features, head_mask):
        outputs = [
            np.asarray(apply(params, batch, head_mask))
            for batch in batching.eval_batches(features, batch_size)
        ]
        return np.concatenate(outputs)[: len(next(iter(features.values())))]

    return predict


def pruning_curve(task, params, train_features, eval_features, score, counts, *, batch_size):
    """Michel et al.'s experiment on a classifier: head importance on `train_features`
    (normalised per layer), then `score(outputs)` on `eval_features` with the `count` least
    important heads pruned, for each of `counts`: (importance_YN, scores)."""
    c = task.model.config
    batches = batching.eval_batches(train_features, batch_size)
    raw_YN = head_importance(classification_loss(task, params), batches, c.num_layers, c.num_heads)
    importance_YN = normalise_by_layer(raw_YN)
    predict = masked_predictor(task, batch_size)
    masks = pruning_masks(importance_YN, counts)
    return importance_YN, [score(predict(params, eval_features, mask)) for mask in masks]


def prunable(counts, metric, *, drop: float) -> int:
    """The most heads pruned before `metric` (one value per count of `counts`, the first
    unpruned) first falls more than `drop` below its unpruned value."""
    if len(counts) != len(metric) or not counts:
        raise ValueError(f"{len(counts)} counts but {len(metric)} metric values")
    for i, value in enumerate(metric):
        if value < metric[0] - drop:
            return counts[i - 1]
    return counts[-1]
