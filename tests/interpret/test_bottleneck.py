"""BLEU by source length against sacrebleu on each bucket scored on its own; the last target
word's loss; relative gradient norms by position; each pair's source gradient norms, batched
and padded, against the pair run alone."""

import jax
import numpy as np
import pytest
import sacrebleu

from attention_jax.data import batching
from attention_jax.interpret import attribution, bottleneck
from tests.interpret.conftest import CLS, SEP, VOCAB

HYPOTHESES = [
    "a man rides a horse",
    "two dogs play in the snow",
    "the woman is reading a book on the bench",
    "children run",
    "a red car parked near the old building in the city",
    "people walk down a busy street at night",
]
REFERENCES = [
    "a man is riding a horse",
    "two dogs are playing in the snow",
    "a woman reads a book on a bench",
    "the children are running",
    "a red car is parked by an old building in the city",
    "People walk along a busy street at night",
]


def test_bleu_by_length_scores_each_bucket_on_its_own():
    lengths = [5, 7, 10, 3, 12, 8]
    buckets = bottleneck.bleu_by_length(
        HYPOTHESES, REFERENCES, lengths, [0, 6, 9, 20, 30], lowercase=True
    )
    assert [(lo, hi, n) for lo, hi, n, _ in buckets] == [
        (0, 6, 2),
        (6, 9, 2),
        (9, 20, 2),
        (20, 30, 0),
    ]
    for (lo, hi, _, score), rows in zip(buckets[:3], ([0, 3], [1, 5], [2, 4]), strict=True):
        assert [i for i, n in enumerate(lengths) if lo <= n < hi] == rows
        expected = sacrebleu.corpus_bleu(
            [HYPOTHESES[i] for i in rows], [[REFERENCES[i] for i in rows]], lowercase=True
        )
        assert score.score == pytest.approx(expected.score, abs=1e-9)
        assert score.sys_len == expected.sys_len and score.ref_len == expected.ref_len
    assert buckets[3][3] is None
    with pytest.raises(ValueError, match="edges"):
        bottleneck.bleu_by_length(HYPOTHESES, REFERENCES, lengths, [5, 5])
    with pytest.raises(ValueError, match="lengths"):
        bottleneck.bleu_by_length(HYPOTHESES, REFERENCES, lengths[:-1], [0, 9])


def test_last_token_loss_is_the_loss_of_the_word_before_eos():
    rng = np.random.default_rng(0)
    logits_BTV = rng.normal(size=(2, 4, 6)).astype(np.float32)
    # [BOS] y₁ y₂ [EOS] pad / [BOS] y₁ y₂ y₃ [EOS]: y₂ is predicted at 1, y₃ at 2.
    targets = np.array([[1, 4, 5, 2, 0], [1, 3, 4, 5, 2]])
    got = bottleneck.last_token_loss(logits_BTV, {"targets": targets})
    log_probs = np.asarray(jax.nn.log_softmax(logits_BTV))
    np.testing.assert_allclose(got, [-log_probs[0, 1, 5], -log_probs[1, 2, 5]], rtol=1e-6)


def test_mean_by_position_averages_each_sentences_norms_relative_to_its_largest():
    mean_S, count_S = bottleneck.mean_by_position(
        [np.array([1.0, 2.0]), np.array([4.0, 1.0, 2.0])], 4
    )
    np.testing.assert_allclose(mean_S, [(0.5 + 1.0) / 2, (1.0 + 0.25) / 2, 0.5, 0.0])
    np.testing.assert_array_equal(count_S, [2, 2, 1, 0])


def test_source_gradient_norms_are_each_pairs_own(translator):
    task, params = translator
    rng = np.random.default_rng(5)
    sources = [rng.integers(3, VOCAB, n).tolist() for n in (4, 2, 6)]
    targets = [rng.integers(3, VOCAB, n).tolist() for n in (3, 5, 2)]
    # Two pairs a batch: the second batch has a padding row; rows are padded to 8.
    batches = batching.PairBatches(
        sources, targets, 2, 0, bos_id=CLS, eos_id=SEP, bucket=8, shuffle=False
    )
    norms = bottleneck.source_gradient_norms(task, params, batches)
    assert [len(norm_S) for norm_S in norms] == [4, 2, 6]
    for source, target, norm_S in zip(sources, targets, norms, strict=True):
        alone = {"inputs": np.array([[*source, SEP]]), "targets": np.array([[CLS, *target, SEP]])}
        x_BSD, score_fn = attribution.embedding_function(
            task, params, alone, bottleneck.last_token_loss
        )
        want_BS = jax.jit(attribution.gradient_norms, static_argnums=0)(score_fn, x_BSD)
        want_S = want_BS[0, : len(source)]
        np.testing.assert_allclose(norm_S, want_S, rtol=1e-4, atol=1e-8)
