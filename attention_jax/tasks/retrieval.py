"""Dense passage retrieval (Karpukhin et al. 2020, section 3.2): training with in-batch negatives.

For questions q_1 … q_B with positive passages p_1 … p_B, every other question's passage is a
negative ("in-batch negatives"), plus one BM25 hard negative per question when the batch has
them. With S = Q Pᵀ the B × Z score matrix (Z = B, or 2B with hard negatives), the loss is
equation 2 averaged over the questions, the negative log-likelihood of the positive passage:

    L(q_i, p_i⁺, p_1⁻ … p_n⁻) = −log( e^{sim(q_i, p_i⁺)} / Σ_z e^{sim(q_i, p_z)} )

The passages are the global batch's: under `jit` over the mesh the batch is one global array,
so Q Pᵀ already spans every device's rows (XLA gathers what it needs); under `pmap` each device
gathers the others' passages with `lax.all_gather` over the pmap axis (`axis_name`), and the
gradient flows back to the device that encoded each passage. `scale` multiplies the scores
before the softmax (1 in the paper; 20 for cosine similarities, as sentence-transformers
trained all-MiniLM-L6-v2).

    task = create(encoder_config, train_config, overrides)         # a DualEncoder
    data = prepare(config.data, tokenizer)                         # pydocs or DPR JSON
    table = evaluate(task, params, data, batch_size, bm25=...)     # top-k accuracy, MRR@10
    retriever = Retriever.load("runs/dpr"); retriever.index(passages); retriever.search(q, 5)

B questions, Z passages, T question length, S passage length, D hidden size.
"""

import dataclasses
import functools
import pathlib
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from attention_jax import training
from attention_jax.data import batching, tokenizers
from attention_jax.data import retrieval as retrieval_data
from attention_jax.evaluation import retrieval as search
from attention_jax.models import dual_encoder
from attention_jax.tasks.base import Task, with_compute_dtype
from attention_jax.training import checkpoint, sharding
from attention_jax.training.runners import PmapRunner

QUESTION_KEYS = ("question_input_ids", "question_input_mask")
PASSAGE_KEYS = ("passage_input_ids", "passage_input_mask")
HARD_NEGATIVE_KEYS = ("hard_negative_input_ids", "hard_negative_input_mask")


def in_batch_nll(questions_BD, passages_ZD, positives_B, scale: float = 1.0):
    """Equation 2 for each question: (nll_B, correct_B).

    Args:
      questions_BD: E_Q(q) of the B questions.
      passages_ZD: E_P(p) of every candidate passage.
      positives_B: the index in passages_ZD of each question's positive passage.
      scale: multiplies sim(q, p) before the softmax.
    """
    scores_BZ = scale * jnp.einsum(
        "BD,ZD->BZ", questions_BD, passages_ZD, preferred_element_type=jnp.float32
    )
    log_probs_BZ = jax.nn.log_softmax(scores_BZ, axis=-1)
    nll_B = -jnp.take_along_axis(log_probs_BZ, positives_B[:, None], axis=-1)[:, 0]
    correct_B = jnp.argmax(scores_BZ, axis=-1) == positives_B
    return nll_B, correct_B


def gather_passages(passages_ZD, axis_name: str | None):
    """(every device's passages, where this device's start): under pmap, the passages of all
    devices in device order; otherwise (jit) the batch is already global."""
    if axis_name is None:
        return passages_ZD, 0
    gathered_ZD = jax.lax.all_gather(passages_ZD, axis_name, tiled=True)
    return gathered_ZD, jax.lax.axis_index(axis_name) * passages_ZD.shape[0]


@dataclasses.dataclass(frozen=True)
class Retrieval(Task):
    """The dual encoder's loss over in-batch (and hard) negatives, and encoding for search.

    Attributes:
      scale: multiplies the scores before the softmax.
      axis_name: the pmap axis to gather passages over (`PmapRunner.axis_name`), or
        None under jit.
    """

    scale: float = 1.0
    axis_name: str | None = None
    input_keys: ClassVar[tuple[str, ...]] = (*QUESTION_KEYS, *PASSAGE_KEYS)

    def inputs(self, batch) -> tuple:
        """Questions, then the positive passages followed by the hard negatives, if any."""
        question_ids, question_mask, passage_ids, passage_mask = super().inputs(batch)
        if HARD_NEGATIVE_KEYS[0] in batch:
            negative_ids, negative_mask = (batch[key] for key in HARD_NEGATIVE_KEYS)
            passage_ids = jnp.concatenate([passage_ids, negative_ids])
            passage_mask = jnp.concatenate([passage_mask, negative_mask])
        return question_ids, question_mask, passage_ids, passage_mask

    def loss(self, params, batch, rng, *, train):
        questions_BD, passages_ZD = self.apply(params, batch, rng, train=train)
        passages_ZD, start = gather_passages(passages_ZD, self.axis_name)
        B = questions_BD.shape[0]
        nll_B, correct_B = in_batch_nll(
            questions_BD, passages_ZD, start + jnp.arange(B), self.scale
        )
        return nll_B.mean(), {"in_batch_accuracy": (correct_B.sum(), jnp.float32(B))}

    def encode(self, params, features, side: str, batch_size: int) -> np.ndarray:
        """E_Q (side "question") or E_P ("passage") of every row of features {"input_ids",
        "input_mask"}: [Z, D] float32. Batches are jitted once and split over every device."""
        apply, num_devices = _encoder(self.model.config, side)
        batch_size = -(-batch_size // num_devices) * num_devices
        variables = {"params": params}
        parts = [
            jax.device_get(apply(variables, batch["input_ids"], batch["input_mask"]))
            for batch in batching.eval_batches(features, batch_size)
        ]
        return np.concatenate(parts)[: len(features["input_ids"])].astype(np.float32)


@functools.cache
def _encoder(config: dual_encoder.DualEncoderConfig, side: str):
    """(one side's jitted encoder, rows split over every device; the number of devices)."""
    mesh = sharding.make_mesh(training.default_config())
    rows = sharding.batch_sharding(mesh)
    method = {"question": "encode_questions", "passage": "encode_passages"}[side]
    apply = jax.jit(
        functools.partial(dual_encoder.DualEncoder(config).apply, method=method),
        in_shardings=(NamedSharding(mesh, PartitionSpec()), rows, rows),
        out_shardings=rows,
    )
    return apply, mesh.size


def create(encoder_config, train_config, overrides=(), scale: float = 1.0) -> Retrieval:
    """A dual encoder of `encoder_config`'s shape (a `bert.BertConfig`), computing in the
    training dtype, its pmap axis set when `train_config.parallelism` is "pmap"."""
    fields = dataclasses.asdict(encoder_config)
    config = dual_encoder.DualEncoderConfig(**{**fields, **dict(overrides)})
    axis_name = PmapRunner.axis_name if train_config.parallelism == "pmap" else None
    model = dual_encoder.DualEncoder(with_compute_dtype(config, train_config))
    return Retrieval(model, scale=scale, axis_name=axis_name)


def init_params(task: Retrieval, encoder) -> dict:
    """Pretrained `BertModel` parameters for every encoder of the task's model."""
    return {name: encoder for name in dual_encoder.encoder_names(task.model.config)}


class RetrievalData(NamedTuple):
    """Training rows and an evaluation set.

    `train` holds the training features (`data.retrieval.training_features`); the evaluation
    set is `questions`, each with the indices of its `relevant` passages in `passages`, the
    collection searched (every passage of the training and evaluated examples).
    """

    train: dict[str, np.ndarray]
    questions: list[str]
    relevant: list[set[int]]
    passages: list[retrieval_data.Passage]
    info: dict


def _splits(d):
    """(train, evaluated) examples: held-out documents of pydocs, or DPR JSON files."""
    if d.format == "dpr":
        for field in ("train_file", "eval_file"):
            if d[field] is None or not pathlib.Path(d[field]).is_file():
                raise ValueError(f"data.{field} {d[field]} does not exist (format 'dpr')")
        return retrieval_data.read_dpr_json(d.train_file), retrieval_data.read_dpr_json(d.eval_file)
    if d.format != "pydocs":
        raise ValueError(f"data.format must be 'pydocs' or 'dpr', got {d.format!r}")
    train, held_out = retrieval_data.split_by_group(
        retrieval_data.read_pydocs(d.train_file), d.held_out_fraction, d.seed
    )
    train, validation = retrieval_data.split_by_group(train, d.validation_fraction, d.seed)
    if d.evaluate_on not in ("validation", "held_out"):
        raise ValueError(
            f"data.evaluate_on must be 'validation' or 'held_out', got {d.evaluate_on!r}"
        )
    if d.evaluate_on == "validation":
        return train, validation
    return train, held_out


def bm25_hard_negatives(examples, bm25: search.Bm25, passages, depth: int = 10):
    """For each example, the best BM25 passage among `passages` that is not one of its
    positives (the paper's hard negatives; pydocs has no answer strings to check)."""
    ranked = search.rank(bm25.scores([e.question for e in examples]), depth)
    negatives = []
    for e, row in zip(examples, ranked, strict=True):
        negatives.append(next(passages[z] for z in row if passages[z] not in e.positives))
    return negatives


def prepare(d, tokenizer: tokenizers.Tokenizer) -> RetrievalData:
    """Reads and splits the data, then turns the training examples into features (with one
    hard negative each when `d.hard_negatives`: DPR's first, or BM25's best wrong passage)."""
    train, evaluated = _splits(d)
    passages = retrieval_data.collection([train, evaluated])
    lengths = (d.max_question_length, d.max_passage_length)
    negatives = None
    if d.hard_negatives and all(e.hard_negatives for e in train):
        negatives = [e.hard_negatives[0] for e in train]
    elif d.hard_negatives:
        train_passages = retrieval_data.collection([train])
        bm25 = search.Bm25([p.text for p in train_passages])
        negatives = bm25_hard_negatives(train, bm25, train_passages)
    info = {
        "format": d.format,
        "evaluated_on": d.evaluate_on if d.format == "pydocs" else d.eval_file,
        "train_questions": len(train),
        "train_documents": len({e.group for e in train}),
        "eval_questions": len(evaluated),
        "eval_documents": len({e.group for e in evaluated}),
        "passages": len(passages),
        "hard_negatives": negatives is not None,
    }
    return RetrievalData(
        retrieval_data.training_features(train, tokenizer, *lengths, negatives),
        [e.question for e in evaluated],
        retrieval_data.relevant(evaluated, passages),
        passages,
        info,
    )


def evaluate(task, params, data: RetrievalData, tokenizer, d, batch_size, bm25_BZ=None):
    """{"dense": metrics, and with `bm25_BZ` (BM25 scores of the same questions) "hybrid"}:
    the whole collection searched exactly in JAX, or by FAISS when `d.faiss_index` names one."""
    passages = retrieval_data.passage_features(data.passages, tokenizer, d.max_passage_length)
    questions = retrieval_data.question_features(data.questions, tokenizer, d.max_question_length)
    passages_ZD = task.encode(params, passages, "passage", batch_size)
    questions_BD = task.encode(params, questions, "question", batch_size)
    depth = max(search.KS)
    if d.faiss_index:
        _, ranked = search.faiss_top_k(questions_BD, passages_ZD, depth, d.faiss_index)
    else:
        _, ranked = search.exact_top_k(questions_BD, passages_ZD, depth)
    results = {"dense": search.metrics(ranked, data.relevant)}
    if bm25_BZ is not None:
        dense_BZ = search.inner_products(questions_BD, passages_ZD)
        hybrid_BZ = search.hybrid_scores(bm25_BZ, dense_BZ, d.hybrid_weight, depth)
        results["hybrid"] = search.metrics(search.rank(hybrid_BZ, depth), data.relevant)
    return results


def bm25_scores(data: RetrievalData) -> np.ndarray:
    """BM25 scores of the evaluation questions against the collection: scores_BZ."""
    return search.Bm25([f"{p.title} {p.text}" for p in data.passages]).scores(data.questions)


class Retriever:
    """A trained dual encoder with its tokenizer, for indexing text and answering queries.

    retriever = Retriever.load("runs/dpr")
    retriever.index(data.retrieval.read_folder("docs/"))
    for score, passage in retriever.search("how do I pickle a class?", k=5): ...
    """

    def __init__(self, task, params, tokenizer, max_question_length=32, max_passage_length=256):
        self.task, self.params, self.tokenizer = task, params, tokenizer
        longest = task.model.config.max_position_embeddings
        self.lengths = (min(max_question_length, longest), min(max_passage_length, longest))
        self.passages, self.passages_ZD = [], None

    @classmethod
    def load(cls, workdir, **lengths) -> "Retriever":
        """The newest checkpoint of a run of experiments/train_dpr.py and its tokenizer."""
        restored = checkpoint.load(workdir)
        if not isinstance(restored.model, dual_encoder.DualEncoder):
            raise ValueError(
                f"{workdir} holds a {type(restored.model).__name__}, not a DualEncoder"
            )
        tokenizer = tokenizers.load_tokenizer(workdir)
        return cls(Retrieval(restored.model), restored.params, tokenizer, **lengths)

    def index(self, passages, batch_size: int = 64) -> "Retriever":
        """Encodes `passages` (a list of `data.retrieval.Passage`) with E_P."""
        features = retrieval_data.passage_features(passages, self.tokenizer, self.lengths[1])
        self.passages = list(passages)
        self.passages_ZD = self.task.encode(self.params, features, "passage", batch_size)
        return self

    def search(self, query: str, k: int = 5):
        """The k passages of highest sim(query, p), best first: [(score, Passage)]."""
        if self.passages_ZD is None:
            raise ValueError("nothing indexed: call index(passages) first")
        features = retrieval_data.question_features([query], self.tokenizer, self.lengths[0])
        question_1D = self.task.encode(self.params, features, "question", 1)
        scores, indices = search.exact_top_k(question_1D, self.passages_ZD, k)
        return [(float(s), self.passages[i]) for s, i in zip(scores[0], indices[0], strict=True)]
