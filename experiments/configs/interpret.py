r"""Interpretability measurements on the repository's own runs (`experiments/interpret.py`).

`get_config("bert")`: a BERT classifier fine-tuned on SST-2 by `make finetune-bert` — attention
rollout against integrated gradients (Kendall τ, top-k overlap) on validation sentences,
highlighted text, Jain & Wallace's attention-permutation test, and head importance with the
head-pruning accuracy curve. The SST-2 data settings are those of
`bert_finetune.py:classification` with the README's 64-token sequences, so the validation
sentences are the ones the run held out.
`get_config("translation")`: runs of `make translate` — BLEU by source length and the gradient
norm of the last target word's loss by source position, each run against the others. The data
settings are those of `translate.py`. The default runs are short ones, 300 steps each (46
minutes for the three, decoding included, on a shared 2-core VM under load from other jobs):

    make translate MODEL=rnn ATTENTION=none ARGS="--config.train.num_train_steps=300 \
        --config.train.workdir=runs/interpret/rnn_none"
    make translate MODEL=rnn ATTENTION=bahdanau ARGS="--config.train.num_train_steps=300 \
        --config.train.workdir=runs/interpret/rnn_bahdanau"
    make translate MODEL=transformer ARGS="--config.train.num_train_steps=300 \
        --config.train.warmup_steps=100 --config.train.workdir=runs/interpret/transformer"
"""

import pathlib

import ml_collections

from attention_jax import cli

PARTS = ("bert", "translation")
HERE = pathlib.Path(__file__).parent


def get_config(arg: str = "bert") -> ml_collections.ConfigDict:
    if arg not in PARTS:
        raise ValueError(f"interpret config is one of {PARTS}, got {arg!r}")
    c = ml_collections.ConfigDict()
    c.part = arg  # "bert" or "translation": which measurements to make.
    c.output_dir = f"runs/interpret/{arg}"  # Figures, HTML and results.json.
    c.batch_size = 32  # Rows per forward / backward pass.
    if arg == "bert":
        c.run = "runs/interpret/sst2"  # Workdir of `make finetune-bert` (checkpoint, vocab.txt).
        c.data = cli.load_config(f"{HERE / 'bert_finetune.py'}:classification").data
        c.data.max_seq_length = 64  # As the run was fine-tuned (README).
        c.num_sentences = 128  # Validation sentences explained (rollout, integrated gradients).
        c.ig_steps = 32  # Gauss–Legendre points of the integrated-gradients path integral.
        c.top_k = 3  # Tokens compared by the top-k overlap.
        c.num_html = 8  # Sentences written as highlighted text.
        # Permutations of [CLS]'s last-layer attention per sentence (Jain & Wallace use 100).
        c.num_permutations = 100
        c.importance_rows = 512  # Training rows the head importance is estimated on.
        c.prune_step = 6  # Heads removed between two points of the pruning curve.
    else:
        runs = ml_collections.ConfigDict()
        # Label -> workdir of `make translate` ("" leaves the run out).
        runs.rnn_none = "runs/interpret/rnn_none"
        runs.rnn_bahdanau = "runs/interpret/rnn_bahdanau"
        runs.transformer = "runs/interpret/transformer"
        c.runs = runs
        c.data = cli.load_config(f"{HERE / 'translate.py'}:transformer").data
        c.split = "validation"  # The split whose <split>.hyp.txt each run wrote.
        # Source-length buckets in words, [edges[i], edges[i + 1]).
        c.length_edges = (1, 9, 11, 13, 15, 18, 100)
        c.max_position = 24  # Source positions (pieces) plotted in the gradient figure.
    return c
