"""Corpus BLEU against a float64 reference written here from Papineni et al. (2002).

The reference splits on whitespace, so the texts here have no punctuation, where sacrebleu's
13a tokenisation is whitespace splitting too. pₙ = Σ clipped matching n-grams / Σ hypothesis
n-grams over the corpus, BLEU = BP · exp(¼ Σ log pₙ), BP = exp(1 − r/c) if c ≤ r else 1. The
'exp' smoothing (mteval-v13a) replaces the k-th zero pₙ by 1/(2ᵏ · Σ hypothesis n-grams).
"""

import collections
import math

import numpy as np
import pytest

from attention_jax import evaluation
from attention_jax.evaluation import bleu

VOCAB = ["the", "cat", "dog", "sat", "on", "mat", "a", "ran", "big", "red"]


def ngram_counts(tokens, n):
    return collections.Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def reference_bleu(hypotheses, references):
    """(score %, precisions %, BP, c, r, correct counts) from the paper, with 'exp' smoothing."""
    correct, total = np.zeros(4, np.int64), np.zeros(4, np.int64)
    c = r = 0
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        hyp, ref = hypothesis.split(), reference.split()
        c, r = c + len(hyp), r + len(ref)
        for n in range(1, 5):
            hyp_counts, ref_counts = ngram_counts(hyp, n), ngram_counts(ref, n)
            correct[n - 1] += sum(min(k, ref_counts[g]) for g, k in hyp_counts.items())
            total[n - 1] += sum(hyp_counts.values())
    precisions = correct / total.astype(np.float64)
    zero_orders = np.cumsum(correct == 0)
    precisions = np.where(correct == 0, 1.0 / (2.0**zero_orders * total), precisions)
    brevity_penalty = math.exp(1 - r / c) if c <= r else 1.0
    score = brevity_penalty * math.exp(np.mean(np.log(precisions)))
    return 100 * score, 100 * precisions, brevity_penalty, c, r, correct


def assert_matches_reference(result, hypotheses, references):
    score, precisions, brevity_penalty, c, r, _ = reference_bleu(hypotheses, references)
    assert result.score == pytest.approx(score, abs=1e-6)
    np.testing.assert_allclose(result.precisions, precisions, rtol=0, atol=1e-6)
    assert result.brevity_penalty == pytest.approx(brevity_penalty, abs=1e-6)
    assert (result.sys_len, result.ref_len) == (c, r)


def random_corpus(rng, size, break_trigrams=False):
    """References from VOCAB; hypotheses are noisy copies (substitutions, drops, inserts).

    The insertion rate is drawn per corpus, so some corpora are shorter than their references
    (BP < 1) and some longer (BP = 1).
    """
    insert_rate = rng.uniform(0.0, 0.25)
    references, hypotheses = [], []
    for length in rng.integers(3, 14, size):
        ref = [VOCAB[i] for i in rng.integers(0, len(VOCAB), length)]
        hyp = []
        for word in ref:
            edit = rng.random()
            if edit < 0.15:
                hyp.append(VOCAB[rng.integers(len(VOCAB))])
            elif edit < 0.25:
                continue
            else:
                hyp.append(word)
            if rng.random() < insert_rate:
                hyp.append(VOCAB[rng.integers(len(VOCAB))])
        if break_trigrams:
            # A word outside VOCAB at every third position: no 3- or 4-gram can match.
            hyp = ["zebra" if i % 3 == 2 else w for i, w in enumerate(hyp)]
        references.append(" ".join(ref))
        hypotheses.append(" ".join(hyp))
    return hypotheses, references


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_matches_paper_on_random_corpora(seed):
    rng = np.random.default_rng(seed)
    hypotheses, references = random_corpus(rng, int(rng.integers(20, 60)))
    # Every order has a match, so smoothing plays no part in this comparison.
    assert (reference_bleu(hypotheses, references)[-1] > 0).all()
    result = evaluation.corpus_bleu(hypotheses, references)
    assert_matches_reference(result, hypotheses, references)
    assert 0 < result.score < 100


def test_exp_smoothing_when_an_order_has_no_match():
    rng = np.random.default_rng(7)
    hypotheses, references = random_corpus(rng, 30, break_trigrams=True)
    correct = reference_bleu(hypotheses, references)[-1]
    assert correct[0] > 0 and correct[1] > 0 and correct[2] == 0 and correct[3] == 0
    result = bleu.corpus_bleu(hypotheses, references)
    assert_matches_reference(result, hypotheses, references)
    # No match of any order at all scores 0 rather than a smoothed value.
    assert bleu.corpus_bleu(["red big dog"], ["the cat sat"]).score == 0.0


def test_perfect_translation_scores_100():
    sentences = ["the cat sat on the mat", "a big red dog ran", "the dog sat on a cat"]
    result = bleu.corpus_bleu(sentences, sentences)
    assert result.score == pytest.approx(100.0, abs=1e-9)
    assert result.precisions == pytest.approx((100.0,) * 4, abs=1e-9)
    assert result.brevity_penalty == 1.0 and result.sys_len == result.ref_len == 17
    assert result.signature.startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")


def test_brevity_penalty():
    references = ["the cat sat on the mat today", "a big red dog ran on the mat"]
    hypotheses = ["the cat sat on the", "a big red dog ran"]  # correct prefixes: all pₙ = 1
    result = bleu.corpus_bleu(hypotheses, references)
    assert (result.sys_len, result.ref_len) == (10, 15)
    assert result.brevity_penalty == pytest.approx(math.exp(1 - 15 / 10), abs=1e-12)
    assert result.score == pytest.approx(100 * math.exp(1 - 15 / 10), abs=1e-9)
    assert_matches_reference(result, hypotheses, references)
    # A longer hypothesis is not rewarded by BP (it stays 1) but loses precision instead.
    longer = bleu.corpus_bleu(["the cat sat on the mat today big red"], [references[0]])
    assert longer.brevity_penalty == 1.0
    assert_matches_reference(longer, ["the cat sat on the mat today big red"], [references[0]])


def test_lowercase():
    hypotheses, references = (
        ["The Cat sat on the Mat", "a BIG dog"],
        ["the cat sat on the mat", "A big dog"],
    )
    mixed = bleu.corpus_bleu(hypotheses, references)
    assert_matches_reference(mixed, hypotheses, references)
    assert mixed.score < 100 and "case:mixed" in mixed.signature
    folded = bleu.corpus_bleu(hypotheses, references, lowercase=True)
    assert folded.score == pytest.approx(100.0, abs=1e-9) and "case:lc" in folded.signature


def test_tokenize_splits_punctuation():
    # 13a separates punctuation, so spacing around it does not matter; "none" keeps it attached.
    hypotheses, references = ["Hello , world . How are you ?"], ["Hello, world. How are you?"]
    assert bleu.corpus_bleu(hypotheses, references).score == pytest.approx(100.0, abs=1e-9)
    untokenized = bleu.corpus_bleu(hypotheses, references, tokenize="none")
    assert untokenized.score < 100 and "tok:none" in untokenized.signature


def test_errors():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        bleu.corpus_bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no sentences to score"):
        bleu.corpus_bleu([], [])
    with pytest.raises(ValueError, match="hypotheses must be a sequence of strings"):
        bleu.corpus_bleu("the cat", ["the cat"])
    with pytest.raises(ValueError, match=r"references\[1\] is int, not str"):
        bleu.corpus_bleu(["a", "b"], ["a", 3])
    with pytest.raises(ValueError, match="unknown tokenize 'moses'"):
        bleu.corpus_bleu(["a"], ["a"], tokenize="moses")
