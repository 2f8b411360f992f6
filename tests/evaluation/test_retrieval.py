"""Retrieval search and metrics: exact top-k against a NumPy float64 argsort, FAISS against the
exact search, BM25 ranking an exact match first, the hybrid against its formula, the metrics on
hand-made rankings.

B questions, Z passages, D embedding size.
"""

import numpy as np
import pytest

from attention_jax.evaluation import retrieval


def _embeddings(seed, B=37, Z=300, D=24):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(B, D)).astype(np.float32), rng.normal(size=(Z, D)).astype(np.float32)


@pytest.mark.parametrize("batch_size", [8, 256])
def test_exact_top_k_is_numpy_argsort(batch_size):
    questions_BD, passages_ZD = _embeddings(0)
    scores, indices = retrieval.exact_top_k(questions_BD, passages_ZD, 20, batch_size)
    scores_BZ = questions_BD.astype(np.float64) @ passages_ZD.astype(np.float64).T
    expected = np.argsort(-scores_BZ, axis=-1)[:, :20]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(scores_BZ, expected, -1), rtol=1e-5)


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_faiss_equals_exact_search(index):
    pytest.importorskip("faiss")
    questions_BD, passages_ZD = _embeddings(1)
    _, exact = retrieval.exact_top_k(questions_BD, passages_ZD, 10)
    scores, found = retrieval.faiss_top_k(questions_BD, passages_ZD, 10, index)
    np.testing.assert_array_equal(found, exact)


PASSAGES = [
    "The pickle module implements binary protocols for serializing Python objects.",
    "Sockets are endpoints of a two-way communication link between programs.",
    "A lock is a synchronization primitive that is not owned by a thread when locked.",
    "The json module exposes an API familiar to users of the marshal and pickle modules.",
]


def test_bm25_ranks_the_exact_match_first():
    bm25 = retrieval.Bm25(PASSAGES)
    scores_BZ = bm25.scores([PASSAGES[2], "pickling objects", "the of and"])
    assert scores_BZ.shape == (3, 4)
    assert retrieval.rank(scores_BZ, 4)[0, 0] == 2
    assert retrieval.rank(scores_BZ, 4)[1, 0] == 0  # "pickling" stems to "pickl"
    np.testing.assert_array_equal(scores_BZ[2], 0.0)  # stop words only
    assert scores_BZ[1, 1] == 0.0 < scores_BZ[1, 3] < scores_BZ[1, 0]


def test_hybrid_is_the_linear_combination_of_normalised_scores():
    rng = np.random.default_rng(2)
    bm25_BZ, dense_BZ = rng.exponential(size=(5, 50)) * 7, rng.normal(size=(5, 50))
    depth, weight = 6, 1.1
    hybrid = retrieval.hybrid_scores(bm25_BZ, dense_BZ, weight, depth)
    for b in range(5):
        union = set(np.argsort(-bm25_BZ[b])[:depth]) | set(np.argsort(-dense_BZ[b])[:depth])
        union = sorted(union)
        x, y = bm25_BZ[b, union], dense_BZ[b, union]
        expected = (x - x.min()) / (x.max() - x.min()) + weight * (y - y.min()) / (
            y.max() - y.min()
        )
        np.testing.assert_allclose(hybrid[b, union], expected, rtol=1e-12)
        outside = np.setdiff1d(np.arange(50), union)
        assert np.all(hybrid[b, outside] == -np.inf)


def test_metrics_on_hand_made_rankings():
    ranked = np.array([[3, 1, 2], [0, 1, 2], [4, 5, 6], [9, 8, 7]])
    relevant = [{1}, {0}, {7}, {7, 8}]
    ranks = retrieval.first_relevant(ranked, relevant)
    np.testing.assert_array_equal(ranks, [2, 1, 0, 2])
    scores = retrieval.metrics(ranked, relevant, ks=(1, 2, 3))
    assert scores == {"top1": 25.0, "top2": 75.0, "top3": 75.0, "mrr@10": 100 * (0.5 + 1 + 0.5) / 4}
    with pytest.raises(ValueError, match="no questions"):
        retrieval.metrics(ranked[:0], [])
