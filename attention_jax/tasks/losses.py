"""Cross-entropy losses shared by the tasks, each returning `(loss, metrics)`.

Metrics map a name to a `(sum, count)` pair of float32 scalars (see `tasks.base`). Logits are
cast to float32 before the softmax, whatever the compute dtype.

B batch, T length, V vocabulary size, C classes; "..." any leading shape.
"""

import jax
import jax.numpy as jnp
import optax


def weighted_cross_entropy(logits_C, labels, weights):
    """Σ weight · cross-entropy and Σ weight · [argmax = label] over any leading shape."""
    logits_C = logits_C.astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits_C, labels)
    correct = jnp.argmax(logits_C, -1) == labels
    return (nll * weights).sum(), (correct * weights).sum()


def sequence_cross_entropy(logits_BTV, labels_BT, weights_BT, *, label_smoothing=0.0):
    """Label-smoothed cross entropy averaged over the positions with weight 1 (Vaswani et al.
    2017, section 5.4).

    The target distribution is q = (1 − ε) one_hot(y) + ε / V (Szegedy et al. 2016), and the
    loss −Σ_v q_v log p_v is averaged over the weighted positions.

    Returns:
      (loss, metrics) with metrics name -> (sum, count): "nll" (unsmoothed negative
      log-likelihood per token, for perplexity), "accuracy" per token and "target_tokens"
      per batch.
    """
    logits_BTV = logits_BTV.astype(jnp.float32)
    weights_BT = weights_BT.astype(jnp.float32)
    V = logits_BTV.shape[-1]
    q_BTV = optax.smooth_labels(jax.nn.one_hot(labels_BT, V), label_smoothing)
    loss_BT = optax.softmax_cross_entropy(logits_BTV, q_BTV)
    nll_sum, correct = weighted_cross_entropy(logits_BTV, labels_BT, weights_BT)
    count = weights_BT.sum()
    loss = (loss_BT * weights_BT).sum() / jnp.maximum(count, 1.0)
    metrics = {
        "nll": (nll_sum, count),
        "accuracy": (correct, count),
        "target_tokens": (count, jnp.float32(1.0)),
    }
    return loss, metrics
