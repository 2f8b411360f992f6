"""Tiny models with random parameters for the interpretability tests (no dropout)."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from attention_jax import training
from attention_jax.models import bert
from attention_jax.tasks import bert_finetuning
from attention_jax.tasks import translation as translation_task

VOCAB = 40
CLS, SEP = 1, 2


def _init(task, batch, seed):
    """The task model's parameters, initialised under `jax.jit` (faster than op by op)."""
    init = jax.jit(lambda key, inputs: task.model.init(key, *inputs)["params"])
    return nn.unbox(init(jax.random.key(seed), task.inputs(batch)))


def bert_batch(rng, B=3, T=8):
    """Classifier inputs: [CLS] words [SEP], then padding of different lengths per row."""
    ids = rng.integers(3, VOCAB, (B, T)).astype(np.int32)
    lengths = np.arange(B) % 3 + T - 3
    for b, n in enumerate(lengths):
        ids[b, 0], ids[b, n - 1], ids[b, n:] = CLS, SEP, 0
    return {
        "input_ids": ids,
        "segment_ids": np.zeros_like(ids),
        "input_mask": (ids != 0).astype(np.int32),
        "label": rng.integers(0, 2, B).astype(np.int32),
        "weight": np.ones(B, np.float32),
    }


@pytest.fixture(scope="session")
def bert_classifier():
    """(task, params): a 2-layer, 2-head BERT classifier with hidden size 16, weights of
    standard deviation 0.3."""
    config = bert.BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_layers=2,
        num_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        hidden_dropout_rate=0.0,
        attention_dropout_rate=0.0,
        initializer_range=0.3,  # outputs that depend clearly on the inputs
    )
    task = bert_finetuning.Classification(bert.BertForSequenceClassification(config))
    batch = bert_batch(np.random.default_rng(0))
    return task, _init(task, batch, 0)


def translation_batch(rng, B=3, S=7):
    """Sources and targets of the same padded length, padded differently."""
    src = rng.integers(3, VOCAB, (B, S)).astype(np.int32)
    tgt = rng.integers(3, VOCAB, (B, S + 1)).astype(np.int32)
    for b in range(B):
        src[b, S - 1 - b :] = 0
        src[b, S - 2 - b] = SEP
        tgt[b, 0], tgt[b, S - b] = CLS, SEP
        tgt[b, S - b + 1 :] = 0
    return {"inputs": src, "targets": tgt}


@pytest.fixture(scope="session", params=["transformer", "rnn_none", "rnn_bahdanau"])
def translator(request):
    """(task, params) of a tiny Transformer (shared embeddings) or RNN encoder-decoder."""
    model, _, attention = request.param.partition("_")
    overrides = {"dropout_rate": 0.0}
    if model == "transformer":
        overrides.update(d_model=16, d_ff=32, num_heads=2)
    else:
        overrides.update(
            attention=attention,
            embed_size=8,
            encoder_hidden_size=8,
            decoder_hidden_size=16,
            attention_hidden_size=8,
            readout_size=8,
        )
    train_config = training.default_config()
    task = translation_task.create(model, "tiny", VOCAB, train_config, overrides=overrides)
    batch = translation_batch(np.random.default_rng(0))
    return task, _init(task, batch, 1)
