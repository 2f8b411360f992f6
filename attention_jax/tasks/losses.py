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

    The target distribution is q = (1 − ε) one_hot(y) + ε / V (Szegedy et al. 2016), so the loss
    −Σ_v q_v log p_v = (1 − ε) (−log p_y) + ε · mean_v(−log p_v): one log-softmax, no one-hot
    array of B × T × V (which, for a 50k vocabulary, costs more than the output layer's matmul).

    Returns:
      (loss, metrics) with metrics name -> (sum, count): "nll" (unsmoothed negative
      log-likelihood per token, for perplexity), "accuracy" per token and "target_tokens"
      per batch.
    """
    logp_BTV = jax.nn.log_softmax(logits_BTV.astype(jnp.float32))
    weights_BT = weights_BT.astype(jnp.float32)
    nll_BT = -jnp.take_along_axis(logp_BTV, labels_BT[..., None], axis=-1)[..., 0]
    loss_BT = nll_BT
    if label_smoothing:
        loss_BT = (1.0 - label_smoothing) * nll_BT - label_smoothing * logp_BTV.mean(-1)
    correct_BT = jnp.argmax(logp_BTV, -1) == labels_BT
    count = weights_BT.sum()
    loss = (loss_BT * weights_BT).sum() / jnp.maximum(count, 1.0)
    metrics = {
        "nll": ((nll_BT * weights_BT).sum(), count),
        "accuracy": ((correct_BT * weights_BT).sum(), count),
        "target_tokens": (count, jnp.float32(1.0)),
    }
    return loss, metrics
