"""Sentence classification with the structured self-attentive embedding (Lin et al. 2017).

    data = prepare(config.data, config.embeddings)               # tokens, vocabulary, vectors
    task = create("sst2", data.vocab_size, train_config, penalty_coefficient=1.0,
                  overrides={"embed_size": data.embed_size})
    training.train(train_config, task, train_batches, eval_batches,
                   init_params=data.init_params)                 # the loaded embeddings
    metrics = task.evaluate(params, eval_batches())              # accuracy, hop overlap
    task.plot_hops(params, data.tokenizer, texts, out_dir, writer, step)

The loss is the mean cross-entropy plus the coefficient times the mean penalty
P = ‖A Aᵀ − I‖²_F (section 2.2; both sentences' for pairs). The hop overlap, the mean over hop
pairs r ≠ q of Σ_s min(A_rs, A_qs), measures how redundant the r hops are: 1 when two hops put
the same weights on the same tokens, 0 when they attend to disjoint tokens.

Embeddings (`prepare`): "random" (a word vocabulary of the training texts), a word2vec / GloVe
text file (the same vocabulary, rows from the file), or a pretrained BERT ("minilm", or a
folder; see `interop.pretrained`): its WordPiece tokenizer and input embedding table.

B batch, S tokens, R hops, C classes, V vocabulary, M embedding size, Z rows.
"""

import dataclasses
import os
import pathlib
import shutil
import textwrap
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np

from attention_jax import viz
from attention_jax.data import glue
from attention_jax.data import sase as sase_data
from attention_jax.models import sase
from attention_jax.ops.structured import attention_penalty
from attention_jax.tasks.base import Task, with_compute_dtype
from attention_jax.tasks.losses import weighted_cross_entropy

PRESETS = ("sst2", "yelp", "age", "tiny")
WORDS_FILENAME = "words.txt"  # a word vocabulary, one word a line, in a run's workdir


def hop_overlap(weights_BRS):
    """Mean over hop pairs r ≠ q of Σ_s min(A_rs, A_qs), per example: overlap_B in [0, 1]."""
    R = weights_BRS.shape[1]
    if R < 2:
        return jnp.zeros(weights_BRS.shape[:1], jnp.float32)
    shared_BRR = jnp.minimum(weights_BRS[:, :, None, :], weights_BRS[:, None, :, :]).sum(-1)
    off_diagonal = shared_BRR.sum((1, 2)) - jnp.trace(shared_BRR, axis1=1, axis2=2)
    return off_diagonal / (R * (R - 1))


@dataclasses.dataclass(frozen=True)
class Classification(Task):
    """Cross-entropy + coefficient · penalty; a batch holds "tokens" (and "tokens_b" for
    pairs), "label" and "weight" (0 for padding rows).

    Attributes:
      penalty_coefficient: the weight of P in the loss (the paper's 1.0; 0 turns it off).
    """

    penalty_coefficient: float = 1.0

    def __post_init__(self):
        if self.penalty_coefficient < 0:
            raise ValueError(f"penalty_coefficient must be ≥ 0, got {self.penalty_coefficient}")

    def inputs(self, batch):
        return (
            (batch["tokens"], batch["tokens_b"]) if self.model.config.pair else (batch["tokens"],)
        )

    def loss(self, params, batch, rng, *, train):
        logits_BC, weights = self.apply(params, batch, rng, train=train, return_weights=True)
        weights = weights if self.model.config.pair else (weights,)
        weight_B = batch["weight"]
        nll, correct = weighted_cross_entropy(logits_BC, batch["label"], weight_B)
        penalty = sum((attention_penalty(w_BRS) * weight_B).sum() for w_BRS in weights)
        overlap = sum((hop_overlap(w_BRS) * weight_B).sum() for w_BRS in weights)
        count = jnp.maximum(weight_B.sum(), 1.0)
        loss = (nll + self.penalty_coefficient * penalty) / count
        metrics = {
            "accuracy": (correct, weight_B.sum()),
            "nll": (nll, weight_B.sum()),
            "penalty": (penalty, weight_B.sum()),
            "hop_overlap": (overlap / len(weights), weight_B.sum()),
        }
        return loss, metrics

    def evaluate(self, params, batches) -> dict[str, float]:
        """Means of the loss metrics (accuracy, nll, penalty, hop_overlap) over `batches`."""
        step = jax.jit(lambda p, b: self.loss(p, b, None, train=False)[1])
        sums = {}
        for batch in batches:
            for name, (total, count) in jax.device_get(step(params, batch)).items():
                s, n = sums.get(name, (0.0, 0.0))
                sums[name] = (s + float(total), n + float(count))
        return {name: s / max(n, 1.0) for name, (s, n) in sums.items()}

    def hop_weights(self, params, tokens_S) -> np.ndarray:
        """A_RS of one sentence's token ids (no padding); for pairs, as either sentence of a
        pair (the shared encoder reads each sentence on its own)."""
        tokens_1S = np.asarray(tokens_S, np.int32)[None]
        batch = {"tokens": tokens_1S, "tokens_b": tokens_1S}
        _, weights = self.apply(params, batch, return_weights=True)
        return np.asarray((weights[0] if self.model.config.pair else weights)[0])

    def plot_hops(self, params, tokenizer, texts, labels, out_dir, writer, step, max_len=64):
        """Each of `texts`' hops over its tokens as a heatmap `<out_dir>/hops_<i>.png`, and the
        summed hops as highlighted text in `<out_dir>/attention.html`; both to TensorBoard.

        Returns the paths written.
        """
        os.makedirs(out_dir, exist_ok=True)
        rows, paths = [], []
        for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
            ids = tokenizer.encode(text)[:max_len] or [tokenizer.unk_id]
            tokens = [tokenizer.id_to_token(t) for t in ids]
            weights_RS = self.hop_weights(params, ids)
            hops = [f"hop {r + 1}" for r in range(len(weights_RS))]
            path = viz.plot_attention(
                weights_RS,
                tokens,
                hops,
                os.path.join(out_dir, f"hops_{i}.png"),
                title=textwrap.fill(text, 100),
            )
            writer.add_image(f"hops/{i}", matplotlib.image.imread(path), step, dataformats="HWC")
            summed_S = weights_RS.sum(0)
            rows.append((tokens, summed_S, f"label {label}"))
            marked = " ".join(
                f"**{t}**" if w >= summed_S.max() / 2 else t
                for t, w in zip(tokens, summed_S, strict=True)
            )
            writer.add_text(f"attention/{i}", f"label {label}: {marked}", step)
            paths.append(path)
        html_path = os.path.join(out_dir, "attention.html")
        viz.highlight_html(rows, html_path, title="Summed attention of all hops")
        return [*paths, html_path]


def create(
    model_size: str, vocab_size: int, train_config, *, penalty_coefficient=1.0, overrides=()
) -> Classification:
    """The task over a `SASEConfig` preset ("sst2", "yelp", "age", "tiny"), computing in the
    training config's dtype; `overrides` set preset fields (None keeps one)."""
    if model_size not in PRESETS:
        raise ValueError(f"model_size must be one of {PRESETS}, got {model_size!r}")
    preset = getattr(sase.SASEConfig, model_size)
    overrides = {k: v for k, v in dict(overrides).items() if v is not None}
    config = with_compute_dtype(preset(vocab_size, **overrides), train_config)
    return Classification(sase.SASE(config), penalty_coefficient=penalty_coefficient)


class Prepared(NamedTuple):
    """Token ids of both splits, their tokenizer and the embeddings to start from.

    `train_rows[z]` holds one list of ids per text of row z (two for pairs); `init_params` is
    None for random embeddings, else the table for `training.train(init_params=...)`.
    """

    tokenizer: Any
    train_rows: list
    train_labels_Z: np.ndarray
    eval_rows: list
    eval_labels_Z: np.ndarray
    eval_texts: list
    init_params: Any
    embed_size: int | None
    info: dict

    @property
    def vocab_size(self):
        return self.tokenizer.vocab_size


def load_embeddings(source: str, train_texts, *, min_count=1, seed=0):
    """(tokenizer, table_VM or None, info) for "random", a vectors file, or a BERT folder."""
    if source == "random" or os.path.isfile(source):
        vocabulary = sase_data.WordVocabulary.build(train_texts, min_count)
        if source == "random":
            return vocabulary, None, {"embeddings": "random"}
        table_VM, found = sase_data.read_word_vectors(source, vocabulary, seed)
        return vocabulary, table_VM, {"embeddings": f"{source}: {found} words found"}
    from attention_jax.interop import pretrained

    bert = pretrained.load_pretrained_bert(source)
    table_VM = np.asarray(bert.encoder["embeddings"]["word_embeddings"]["embedding"])
    return bert.tokenizer, table_VM, {"embeddings": f"{source}: input embeddings of BERT"}


def prepare(d, embeddings: str) -> Prepared:
    """Reads `d.dataset`, splits off validation and tokenises with the embeddings' tokenizer.

    SST-2's train file is split by `glue.sentence_split` (whole sentences held out, their
    phrases dropped from train); TFDS datasets use `d.eval_split`. `d.train_rows` > 0 keeps
    that many (shuffled) training rows.
    """
    texts, labels_Z = sase_data.read_sentences(
        d.dataset, "train", train_file=d.train_file, data_dir=d.data_dir
    )
    if d.dataset == "sst2":
        train_rows, eval_rows, dropped = glue.sentence_split(texts, d.validation_size, d.seed)
        eval_texts, eval_labels_Z = [texts[i] for i in eval_rows], labels_Z[eval_rows]
        texts, labels_Z = [texts[i] for i in train_rows], labels_Z[train_rows]
        info = {
            "validation": f"{len(eval_rows)} whole sentences of {d.train_file}; "
            f"{dropped} training phrases inside them dropped"
        }
    else:
        eval_texts, eval_labels_Z = sase_data.read_sentences(
            d.dataset, d.eval_split, data_dir=d.data_dir
        )
        info = {"validation": f"{len(eval_texts)} rows of {d.dataset}/{d.eval_split}"}
    if d.train_rows:
        keep = np.random.default_rng(d.seed).permutation(len(texts))[: d.train_rows]
        texts, labels_Z = [texts[i] for i in keep], labels_Z[keep]
    tokenizer, table_VM, embedding_info = load_embeddings(
        embeddings, [t for row in texts for t in row], min_count=d.min_count, seed=d.seed
    )

    def encode(rows):
        columns = [tokenizer.encode_batch([row[k] for row in rows]) for k in range(len(rows[0]))]
        cut = [[ids[: d.max_len] or [tokenizer.unk_id] for ids in column] for column in columns]
        return [list(row) for row in zip(*cut, strict=True)]

    init_params = None if table_VM is None else {"encoder": {"embed": {"embedding": table_VM}}}
    return Prepared(
        tokenizer,
        encode(texts),
        labels_Z,
        encode(eval_texts),
        eval_labels_Z,
        eval_texts,
        init_params,
        None if table_VM is None else int(table_VM.shape[1]),
        {**info, **embedding_info, "train_rows": len(texts), "vocab_size": tokenizer.vocab_size},
    )


def save_tokenizer(tokenizer, workdir) -> None:
    """Copies the run's tokenizer into `workdir`: words.txt for a word vocabulary, else the
    tokenizer's own files (vocab.txt, ...), so that the workdir is self-contained."""
    workdir = pathlib.Path(workdir)
    if isinstance(tokenizer, sase_data.WordVocabulary):
        tokenizer.save(workdir / WORDS_FILENAME)
        return
    for path in tokenizer.files:
        shutil.copy(path, workdir / pathlib.Path(path).name)
