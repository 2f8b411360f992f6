"""Perplexity, and the n-gram baselines a language model must beat on the same held-out text.

Perplexity is exp of the mean negative log-likelihood (in nats). Per token it depends on the
tokenizer; per word (the total NLL divided by the number of whitespace-separated words of the
text) it does not, so models with different vocabularies compare.

The baselines score exactly the targets the model scores (every token of each framed document
but the first), from counts over the training documents:
- unigram: P(w) = (c(w) + 1) / (N + V) (add-one);
- bigram: interpolated Kneser-Ney with absolute discount δ (Chen & Goodman 1999, eq. 26),
  P(w | v) = max(c(vw) − δ, 0) / c(v) + δ N₁₊(v•) / c(v) · P_cont(w), where the continuation
  probability P_cont(w) = N₁₊(•w) / N₁₊(••) counts the distinct words before w, itself
  interpolated with the uniform distribution the same way; an unseen v falls back to P_cont.

V vocabulary size, Z target tokens.
"""

import math

import numpy as np


def perplexity(nll_sum: float, count: float) -> float:
    """exp(Σ NLL / count): per token with the number of targets, per word with words."""
    return math.exp(nll_sum / count)


def _pairs(documents) -> tuple[np.ndarray, np.ndarray]:
    """(previous, target) token ids of every target of the documents, as int64 arrays."""
    previous = np.concatenate([np.asarray(d[:-1], np.int64) for d in documents])
    target = np.concatenate([np.asarray(d[1:], np.int64) for d in documents])
    return previous, target


def unigram_nll(train_documents, eval_documents, vocab_size: int) -> tuple[float, int]:
    """(Σ NLL, number of targets) of the add-one unigram model on the held-out documents."""
    _, train_Z = _pairs(train_documents)
    _, eval_Z = _pairs(eval_documents)
    counts_V = np.bincount(train_Z, minlength=vocab_size)
    logp_V = np.log((counts_V + 1.0) / (len(train_Z) + vocab_size))
    return float(-logp_V[eval_Z].sum()), len(eval_Z)


def kneser_ney_bigram_nll(
    train_documents, eval_documents, vocab_size: int, discount: float = 0.75
) -> tuple[float, int]:
    """(Σ NLL, number of targets) of the interpolated Kneser-Ney bigram on held-out documents."""
    if not 0.0 < discount < 1.0:
        raise ValueError(f"discount must be in (0, 1), got {discount}")
    V, d = vocab_size, discount
    prev_Z, next_Z = _pairs(train_documents)
    bigrams, bigram_counts = np.unique(prev_Z * V + next_Z, return_counts=True)
    first, second = bigrams // V, bigrams % V  # each distinct bigram once
    context_counts_V = np.bincount(prev_Z, minlength=V).astype(np.float64)
    followers_V = np.bincount(first, minlength=V).astype(np.float64)  # N₁₊(v•)
    predecessors_V = np.bincount(second, minlength=V).astype(np.float64)  # N₁₊(•w)
    num_types = len(bigrams)  # N₁₊(••)
    seen_types = np.count_nonzero(predecessors_V)
    p_cont_V = (np.maximum(predecessors_V - d, 0.0) + d * seen_types / V) / num_types

    eval_prev, eval_next = _pairs(eval_documents)
    index = np.searchsorted(bigrams, eval_prev * V + eval_next)
    index = np.minimum(index, len(bigrams) - 1)
    found = bigrams[index] == eval_prev * V + eval_next
    c_vw = np.where(found, bigram_counts[index], 0).astype(np.float64)
    c_v = context_counts_V[eval_prev]
    seen = c_v > 0
    c_v_safe = np.where(seen, c_v, 1.0)
    p_Z = np.where(
        seen,
        np.maximum(c_vw - d, 0.0) / c_v_safe
        + d * followers_V[eval_prev] / c_v_safe * p_cont_V[eval_next],
        p_cont_V[eval_next],
    )
    return float(-np.log(p_Z).sum()), len(eval_next)
