"""The fixed-vector bottleneck and the gradient shortcut of attention, measured on translation.

Bahdanau, Cho & Bengio 2015 (section 5.1, figure 2): an encoder-decoder that squeezes the
source into one vector loses BLEU as sentences grow, and attention does not. `bleu_by_length`
scores corpus BLEU separately on each source-length bucket.

Attention also gives the loss at a target word a direct path to every source word; without it
the gradient reaches a source word only through the recurrence. `last_token_loss` is the loss of
the last target word y_n (the word before EOS), teacher-forced, as a function of the source
embeddings (`attribution.embedding_function`); ‖∂ℓ_n/∂e_s‖ by source position s is then the
measurement (`attribution.gradient_norms`).

B batch, S source positions, T target positions, V vocabulary.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from attention_jax.evaluation import bleu
from attention_jax.interpret import attribution
from attention_jax.models.common import PAD_ID


def bleu_by_length(
    hypotheses: Sequence[str],
    references: Sequence[str],
    lengths: Sequence[int],
    edges: Sequence[int],
    **bleu_options,
) -> list[tuple[int, int, int, bleu.BleuScore | None]]:
    """(low, high, sentences, BLEU) per bucket low ≤ length < high of consecutive `edges`;
    BLEU is None for an empty bucket. `bleu_options` go to `evaluation.corpus_bleu`."""
    if not len(hypotheses) == len(references) == len(lengths):
        raise ValueError(
            f"{len(hypotheses)} hypotheses, {len(references)} references, {len(lengths)} lengths"
        )
    if len(edges) < 2 or any(a >= b for a, b in zip(edges, edges[1:], strict=False)):
        raise ValueError(f"edges must be at least two increasing numbers, got {list(edges)}")
    buckets = []
    for low, high in zip(edges, edges[1:], strict=False):
        rows = [i for i, n in enumerate(lengths) if low <= n < high]
        score = None
        if rows:
            score = bleu.corpus_bleu(
                [hypotheses[i] for i in rows], [references[i] for i in rows], **bleu_options
            )
        buckets.append((low, high, len(rows), score))
    return buckets


def last_token_loss(logits_BTV, batch):
    """An `output_fn`: −log p(y_n | y_<n, x) of each row's last target word y_n (the target
    before EOS; `batch["targets"]` is [BOS] y₁ … y_n [EOS], 0-padded)."""
    labels_BT = batch["targets"][:, 1:]
    last_B = jnp.maximum((labels_BT != PAD_ID).sum(-1) - 2, 0)  # EOS is at n, y_n at n − 1
    log_probs_BTV = jax.nn.log_softmax(logits_BTV.astype(jnp.float32))
    label_B = jnp.take_along_axis(labels_BT, last_B[:, None], axis=1)
    log_probs_BV = jnp.take_along_axis(log_probs_BTV, last_B[:, None, None], axis=1)[:, 0]
    return -jnp.take_along_axis(log_probs_BV, label_B, axis=1)[:, 0]


def source_gradient_norms(task, params, batches) -> list[np.ndarray]:
    """‖∂ℓ_n/∂e_s‖₂ at each source piece (EOS left out) of each pair of `batches` (`PairBatches`
    without shuffling), ℓ_n the pair's `last_token_loss`: one norm_S per pair, in order."""

    @jax.jit
    def norms(params, batch):
        x_BSD, score_fn = attribution.embedding_function(task, params, batch, last_token_loss)
        return attribution.gradient_norms(score_fn, x_BSD)

    per_pair = []
    for batch in batches:
        lengths_B = (batch["inputs"] != PAD_ID).sum(-1) - 1
        norm_BS = np.asarray(norms(params, batch))
        per_pair.extend(norm_S[: max(n, 0)] for norm_S, n in zip(norm_BS, lengths_B, strict=True))
    return per_pair[: batches.num_pairs]


def mean_by_position(norms, max_position: int):
    """(mean_S, count_S): the mean over sentences of each sentence's norms divided by its
    largest, at positions s < max_position (`norms`: one 1-D array per sentence)."""
    total_S, count_S = np.zeros(max_position), np.zeros(max_position)
    for norm_S in norms:
        relative_S = np.asarray(norm_S[:max_position], np.float64) / max(
            float(np.max(norm_S)), 1e-30
        )
        total_S[: len(relative_S)] += relative_S
        count_S[: len(relative_S)] += 1
    return total_S / np.maximum(count_S, 1), count_S
