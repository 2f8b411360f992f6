"""Passage retrieval: search, the BM25 baseline, the hybrid, and the metrics of Karpukhin et al.
2020 (section 5: top-k retrieval accuracy; MRR@10 as in MS MARCO).

- `exact_top_k`: maximum inner product search, exactly, in JAX (one jitted matmul + top-k per
  batch of questions against the whole passage matrix).
- `faiss_top_k`: the same through a FAISS index, for collections too large for one dense
  matrix: "flat" (exact, FAISS's own brute force) or "hnsw" (approximate, a graph index).
- `Bm25`: Okapi BM25 over the same passages by the bm25s library (Lucene's variant, English
  stop words and Snowball stemming).
- `hybrid_scores`: the paper's BM25 + DPR linear combination (section 5.1), over the union of
  each system's top `depth` passages, each score min-max normalised over that union:

      hybrid(q, p) = n(BM25(q, p)) + λ · n(sim(q, p)),   n(x) = (x − min x) / (max x − min x)

- `metrics`: top-k accuracy (a relevant passage among the first k, k = 1, 5, 20, 100) and
  MRR@10 (mean of 1 / rank of the first relevant passage, 0 beyond rank 10).

B questions, Z passages, D embedding size; rankings are [B, k] arrays of passage indices.
"""

import functools
from collections.abc import Collection, Sequence

import bm25s
import jax
import jax.numpy as jnp
import numpy as np
import Stemmer

KS = (1, 5, 20, 100)
MRR_DEPTH = 10
FAISS_INDEXES = ("flat", "hnsw")


@jax.jit
def inner_products(questions_BD, passages_ZD):
    """sim(q, p) = qᵀp for every question and passage: scores_BZ (float32)."""
    return jnp.einsum("BD,ZD->BZ", questions_BD, passages_ZD, preferred_element_type=jnp.float32)


@functools.partial(jax.jit, static_argnums=2)
def _top_k(questions_BD, passages_ZD, k):
    return jax.lax.top_k(inner_products(questions_BD, passages_ZD), k)


def exact_top_k(questions_BD, passages_ZD, k: int, batch_size: int = 256):
    """The k passages of largest inner product with each question, best first.

    Returns:
      (scores, indices): NumPy [B, k] float32 and int32.
    """
    k = min(k, len(passages_ZD))
    passages_ZD = jnp.asarray(passages_ZD)
    parts = [
        jax.device_get(_top_k(jnp.asarray(questions_BD[i : i + batch_size]), passages_ZD, k))
        for i in range(0, len(questions_BD), batch_size)
    ]
    return tuple(np.concatenate(p) for p in zip(*parts, strict=True))


def faiss_top_k(questions_BD, passages_ZD, k: int, index: str = "flat", hnsw_neighbors: int = 32):
    """`exact_top_k` through a FAISS inner-product index ("flat" exact, "hnsw" approximate)."""
    import faiss  # optional: only this function needs faiss-cpu

    if index not in FAISS_INDEXES:
        raise ValueError(f"FAISS index {index!r} is not one of {FAISS_INDEXES}")
    passages_ZD = np.ascontiguousarray(passages_ZD, np.float32)
    D = passages_ZD.shape[1]
    if index == "flat":
        searcher = faiss.IndexFlatIP(D)
    else:
        searcher = faiss.IndexHNSWFlat(D, hnsw_neighbors, faiss.METRIC_INNER_PRODUCT)
        searcher.hnsw.efSearch = max(64, k)
    searcher.add(passages_ZD)
    scores, indices = searcher.search(np.ascontiguousarray(questions_BD, np.float32), k)
    return scores, indices.astype(np.int32)


class Bm25:
    """BM25 scores of questions against a fixed list of passage texts (bm25s)."""

    def __init__(self, texts: Sequence[str], language: str = "english"):
        if not texts:
            raise ValueError("BM25 needs at least one passage")
        self._stemmer = Stemmer.Stemmer(language)
        self._retriever = bm25s.BM25()
        self._retriever.index(self._tokenize(texts), show_progress=False)
        self.num_passages = len(texts)

    def _tokenize(self, texts):
        return bm25s.tokenize(
            list(texts),
            stopwords="en",
            stemmer=self._stemmer,
            return_ids=False,
            show_progress=False,
        )

    def scores(self, questions: Sequence[str]) -> np.ndarray:
        """BM25(q, p) for every question and passage: scores_BZ (a question with no indexed
        word scores 0 everywhere)."""
        scores_BZ = np.zeros((len(questions), self.num_passages), np.float32)
        for b, tokens in enumerate(self._tokenize(questions)):
            ids = self._retriever.get_tokens_ids(tokens)
            if ids:
                scores_BZ[b] = self._retriever.get_scores_from_ids(ids)
        return scores_BZ


def rank(scores_BZ: np.ndarray, k: int) -> np.ndarray:
    """The k best passages of each row, best first (ties: the lower index first): [B, k]."""
    return np.argsort(-scores_BZ, axis=-1, kind="stable")[:, :k]


def _in_top(scores_BZ, depth):
    keep_BZ = np.zeros(scores_BZ.shape, bool)
    np.put_along_axis(keep_BZ, rank(scores_BZ, depth), True, axis=-1)
    return keep_BZ


def normalise(scores_BZ: np.ndarray, keep_BZ: np.ndarray) -> np.ndarray:
    """(x − min) / (max − min) per row, min and max over the kept entries (0 where max = min)."""
    low_B1 = np.where(keep_BZ, scores_BZ, np.inf).min(-1, keepdims=True)
    high_B1 = np.where(keep_BZ, scores_BZ, -np.inf).max(-1, keepdims=True)
    return (scores_BZ - low_B1) / np.maximum(high_B1 - low_B1, 1e-12)


def hybrid_scores(bm25_BZ, dense_BZ, weight: float, depth: int = 100) -> np.ndarray:
    """n(BM25) + λ·n(sim) over the union of each system's top `depth`; −inf elsewhere."""
    bm25_BZ, dense_BZ = np.asarray(bm25_BZ, np.float64), np.asarray(dense_BZ, np.float64)
    keep_BZ = _in_top(bm25_BZ, depth) | _in_top(dense_BZ, depth)
    hybrid_BZ = normalise(bm25_BZ, keep_BZ) + weight * normalise(dense_BZ, keep_BZ)
    return np.where(keep_BZ, hybrid_BZ, -np.inf)


def first_relevant(ranked: np.ndarray, relevant: Sequence[Collection[int]]) -> np.ndarray:
    """The 1-based rank of each question's first relevant passage in `ranked` ([B, k]); 0 if
    none is there."""
    if len(ranked) != len(relevant):
        raise ValueError(f"{len(ranked)} rankings but {len(relevant)} sets of relevant passages")
    ranks_B = np.zeros(len(ranked), np.int64)
    for b, (row, wanted) in enumerate(zip(ranked, relevant, strict=True)):
        hits = np.flatnonzero(np.isin(row, list(wanted)))
        ranks_B[b] = hits[0] + 1 if len(hits) else 0
    return ranks_B


def metrics(ranked: np.ndarray, relevant: Sequence[Collection[int]], ks=KS) -> dict[str, float]:
    """{"top1", "top5", "top20", "top100", "mrr@10"} in percent, from rankings [B, ≥ max(ks)]."""
    if not len(ranked):
        raise ValueError("no questions to score")
    ranks_B = first_relevant(ranked, relevant)
    found_B = ranks_B > 0
    scores = {f"top{k}": 100.0 * float(np.mean(found_B & (ranks_B <= k))) for k in ks}
    reciprocal_B = np.where(found_B & (ranks_B <= MRR_DEPTH), 1.0 / np.maximum(ranks_B, 1), 0.0)
    scores[f"mrr@{MRR_DEPTH}"] = 100.0 * float(np.mean(reciprocal_B))
    return scores


def markdown_table(table: dict[str, dict[str, float]]) -> str:
    """Rows of `metrics` results as a Markdown table, one row per system."""
    names = list(next(iter(table.values())))
    lines = [f"| system | {' | '.join(names)} |", "|---" * (len(names) + 1) + "|"]
    lines += [
        f"| {system} | {' | '.join(f'{row[n]:.1f}' for n in names)} |"
        for system, row in table.items()
    ]
    return "\n".join(lines)
