"""The n-gram baselines against counts written out by hand, and as proper distributions."""

import math

import numpy as np
import pytest

from attention_jax.evaluation import perplexity

TRAIN = [[1, 2, 3, 2, 3], [1, 3, 3, 4]]


def test_perplexity_is_exp_of_the_mean():
    assert perplexity.perplexity(math.log(7.0) * 5, 5) == pytest.approx(7.0)


def test_unigram_is_add_one_over_the_training_targets():
    nll, count = perplexity.unigram_nll(TRAIN, [[1, 3, 5]], vocab_size=6)
    # Targets in train: 2 3 2 3 | 3 3 4 → c(3) = 4, c(5) = 0, N = 7, V = 6.
    expected = -math.log(5 / 13) - math.log(1 / 13)
    assert count == 2 and nll == pytest.approx(expected)


def kneser_ney_reference(train, v, w, V, d=0.75):
    """Chen & Goodman's interpolated Kneser-Ney bigram, from the bigram list, one word at a time."""
    bigrams = [(a, b) for doc in train for a, b in zip(doc[:-1], doc[1:], strict=True)]
    types = set(bigrams)
    predecessors = {x: len({a for a, b in types if b == x}) for x in range(V)}
    seen = sum(1 for x in range(V) if predecessors[x] > 0)
    p_cont = (max(predecessors[w] - d, 0) + d * seen / V) / len(types)
    c_v = sum(1 for a, _ in bigrams if a == v)
    if c_v == 0:
        return p_cont
    c_vw = sum(1 for pair in bigrams if pair == (v, w))
    followers = len({b for a, b in types if a == v})
    return max(c_vw - d, 0) / c_v + d * followers / c_v * p_cont


@pytest.mark.parametrize("v, w", [(2, 3), (3, 3), (3, 2), (1, 4), (4, 1), (0, 2), (3, 5)])
def test_kneser_ney_bigram_matches_the_formula(v, w):
    nll, count = perplexity.kneser_ney_bigram_nll(TRAIN, [[v, w]], vocab_size=6)
    assert count == 1
    assert nll == pytest.approx(-math.log(kneser_ney_reference(TRAIN, v, w, 6)))


@pytest.mark.parametrize("v", range(6))
def test_kneser_ney_bigram_sums_to_one_over_the_vocabulary(v):
    probs = [
        math.exp(-perplexity.kneser_ney_bigram_nll(TRAIN, [[v, w]], vocab_size=6)[0])
        for w in range(6)
    ]
    assert sum(probs) == pytest.approx(1.0)
    assert min(probs) > 0


def test_bigram_beats_unigram_on_text_with_structure():
    rng = np.random.default_rng(0)
    docs = [list(np.tile([1, 2, 3, 4], 20) + rng.integers(0, 2, 80) * 4) for _ in range(5)]
    uni, n = perplexity.unigram_nll(docs[:4], docs[4:], vocab_size=9)
    bi, _ = perplexity.kneser_ney_bigram_nll(docs[:4], docs[4:], vocab_size=9)
    assert perplexity.perplexity(bi, n) < perplexity.perplexity(uni, n) / 2
