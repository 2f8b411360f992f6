"""A two-layer Transformer-encoder classifier and synthetic data for the training-loop tests.

Checkpoints record `tests.training.tiny_classifier.TinyClassifier`, which this module registers
(`checkpoint.register`), so `checkpoint.load` rebuilds it in any process that imported it.

B batch, T length, D model dim, F mlp dim, V vocab, C classes.
"""

import dataclasses
import time
from typing import ClassVar

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax

from attention_jax import training
from attention_jax.layers import MultiHeadAttention
from attention_jax.tasks import base
from attention_jax.training import checkpoint


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    vocab_size: int = 32
    embed_dim: int = 16
    num_heads: int = 2
    mlp_dim: int = 32
    num_layers: int = 2
    num_classes: int = 3
    max_len: int = 8

    # A field an older TinyConfig had, which checkpoint.build_model drops (test_checkpoint.py).
    RETIRED_FIELDS: ClassVar[tuple[str, ...]] = ("label_smoothing",)


def _dense(features, axes, name):
    return nn.Dense(
        features,
        kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[-1:]),
        name=name,
    )


def _layer_norm(name):
    return nn.LayerNorm(
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
        name=name,
    )


class TinyClassifier(nn.Module):
    config: TinyConfig

    @nn.compact
    def __call__(self, ids_BT):
        c = self.config
        embed = nn.initializers.normal(0.5)
        token_VD = self.param(
            "token",
            nn.with_logical_partitioning(embed, ("vocab", "embed")),
            (c.vocab_size, c.embed_dim),
        )
        position_TD = self.param(
            "position",
            nn.with_logical_partitioning(embed, (None, "embed")),
            (c.max_len, c.embed_dim),
        )
        x_BTD = token_VD[ids_BT] + position_TD[: ids_BT.shape[1]]
        for i in range(c.num_layers):
            h_BTD = _layer_norm(f"ln_attention_{i}")(x_BTD)
            # No projection biases: the key bias gets an exactly-zero gradient (softmax is
            # shift-invariant), and Adam would turn its rounding noise into full-size steps.
            attention = MultiHeadAttention(c.num_heads, use_bias=False, name=f"attention_{i}")
            x_BTD = x_BTD + attention(h_BTD)
            h_BTD = _layer_norm(f"ln_mlp_{i}")(x_BTD)
            h_BTF = nn.gelu(_dense(c.mlp_dim, ("embed", "mlp"), f"mlp_in_{i}")(h_BTD))
            x_BTD = x_BTD + _dense(c.embed_dim, ("mlp", "embed"), f"mlp_out_{i}")(h_BTF)
            x_BTD = nn.with_logical_constraint(x_BTD, ("batch", "length", "embed"))
        return _dense(c.num_classes, ("embed", None), "classifier")(x_BTD.mean(axis=1))


checkpoint.register(TinyClassifier)  # not one of the project's own models


class TinyTask(base.Task):
    """Cross entropy of the majority class; a batch with `poison` > 0 has a NaN loss."""

    input_keys = ("ids",)

    def loss(self, params, batch, rng, *, train):
        del rng, train
        logits_BC = self.model.apply({"params": params}, *self.inputs(batch))
        losses_B = optax.softmax_cross_entropy_with_integer_labels(logits_BC, batch["label"])
        # The loss a test poisons: NaN when the batch says so.
        loss = losses_B.mean() + jnp.where(jnp.any(batch["poison"] > 0), jnp.nan, 0.0)
        correct = jnp.sum(jnp.argmax(logits_BC, -1) == batch["label"])
        return loss, {"accuracy": (correct, batch["label"].shape[0])}


def task():
    return TinyTask(TinyClassifier(TinyConfig()))


def global_batch(index, batch_size, config=TinyConfig(), poison_batch=-1):
    """Batch number `index` of an endless synthetic stream; the label is the majority class."""
    rng = np.random.default_rng(index)
    ids = rng.integers(0, config.vocab_size, (batch_size, config.max_len), dtype=np.int32)
    label = np.argmax(np.stack([(ids % 3 == k).sum(1) for k in range(3)], 1), 1).astype(np.int32)
    poison = np.full((batch_size,), float(index == poison_batch), np.float32)
    return {"ids": ids, "label": label, "poison": poison}


class SlowIterator:
    """Waits before every batch (so a test can signal a run mid-way); keeps get/set_state."""

    def __init__(self, iterator, seconds):
        self.iterator, self.seconds = iterator, seconds

    def __iter__(self):
        return self

    def __next__(self):
        time.sleep(self.seconds)
        return next(self.iterator)

    def get_state(self):
        return self.iterator.get_state()

    def set_state(self, state):
        self.iterator.set_state(state)


def train_data(batch_size, poison_batch=-1, sleep=0.0):
    """A resumable grain iterator; each process yields its own rows of every global batch."""
    rows = batch_size // jax.process_count()
    start = jax.process_index() * rows

    def make(index):
        batch = global_batch(index, batch_size, poison_batch=poison_batch)
        return {k: v[start : start + rows] for k, v in batch.items()}

    iterator = iter(grain.MapDataset.range(10**6).map(make).to_iter_dataset())
    return SlowIterator(iterator, sleep) if sleep else iterator


def config(workdir, **overrides):
    c = training.default_config()
    c.workdir = str(workdir)
    c.num_train_steps = 6
    c.batch_size = 16
    c.learning_rate = 1e-2
    c.warmup_steps = 2
    c.weight_decay = 0.01
    c.grad_clip_norm = 1.0
    c.eval_every_steps = 0
    c.log_every_steps = 3
    c.checkpoint_every_steps = 0
    c.progress_bar = False
    c.update(overrides)
    return c


def run(c, poison_batch=-1, sleep=0.0, eval_data=None, init_params=None, data=None):
    """Trains the tiny classifier under config `c` and returns the final TrainState; `data`
    replaces the training iterator."""
    return training.train(
        c,
        task(),
        train_data(c.batch_size, poison_batch, sleep) if data is None else data,
        eval_data=eval_data,
        init_params=init_params,
    )
