"""The contract between an experiment family and the shared training loop.

A task is a model plus what the loop, the scripts and the notebooks need to know about it:

    task.model                                   the Linen module; its `config` is a frozen
                                                 dataclass, so checkpoints describe the model
    task.inputs(batch) -> tuple                  the model's positional inputs from a batch
    task.apply(params, batch, rng=None, *, train=False) -> outputs
    task.loss(params, batch, rng, *, train) -> (loss, metrics)
    task.predict(params, features, batch_size) -> outputs on every row, as NumPy arrays
    task.attention_weights(params, batch) -> {layer path: weights_BNTS}

`loss` is the scalar mean over the batch and `metrics` maps a name to a `(sum, count)` pair of
float32 scalars, which the loop adds up over micro-batches, steps and devices. Each family adds
what it needs on top (scoring, decoding, attention weights for plots) in its own module, so a
new family is one task module plus a short script, with no edit elsewhere.
"""

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from attention_jax.data import batching


@dataclasses.dataclass(frozen=True)
class Task:
    """Base of every task: `inputs` from `input_keys`, `apply` without dropout unless training.

    Attributes:
      model: the Linen module whose only required field is `config`.
      input_keys: the batch keys, in order, that are the model's positional inputs.
    """

    model: nn.Module
    input_keys: ClassVar[tuple[str, ...]] = ()

    def inputs(self, batch) -> tuple:
        """The model's positional inputs; `batch` may be a one-row batch of zeros (init)."""
        return tuple(batch[key] for key in self.input_keys)

    def apply(self, params, batch, rng=None, *, train: bool = False, **kwargs) -> Any:
        """The model's outputs on `batch`; dropout draws from `rng` when `train`."""
        return self.model.apply(
            {"params": params},
            *self.inputs(batch),
            deterministic=not train,
            rngs={} if rng is None else {"dropout": rng},
            **kwargs,
        )

    def loss(self, params, batch, rng, *, train: bool):
        """`(loss, metrics)` of `batch`: the mean loss and name -> (sum, count)."""
        raise NotImplementedError

    def attention_weights(self, params, batch) -> dict[str, jax.Array]:
        """Every attention layer's weights_BNTS on `batch` (no dropout), in call order, keyed
        by the layer's path in the model ("bert/layers_0/attention", ...).

        The model's config must have `sow_attention_weights` (BERT, the Transformer); the
        weights come from the "intermediates" the layers sow, so no caller indexes them.
        """
        config = dataclasses.replace(self.model.config, sow_attention_weights=True)
        model = self.model.clone(config=config)
        _, state = model.apply({"params": params}, *self.inputs(batch), mutable=["intermediates"])
        suffix = "/attention_weights"
        return {
            path.removesuffix(suffix): weights[0]
            for path, weights in traverse_util.flatten_dict(state["intermediates"], sep="/").items()
            if path.endswith(suffix)
        }

    def predict(self, params, features: dict[str, np.ndarray], batch_size: int):
        """The model's outputs (without dropout) on every row of `features`, as NumPy arrays.

        Rows go through one jitted `apply` in batches of `batch_size`; the last batch is padded
        and its padding rows are dropped from the outputs.
        """
        apply = jax.jit(self.apply)
        outputs = [
            jax.device_get(apply(params, batch))
            for batch in batching.eval_batches(features, batch_size)
        ]
        num_rows = len(next(iter(features.values())))
        return jax.tree.map(lambda *parts: np.concatenate(parts)[:num_rows], *outputs)


def with_compute_dtype(model_config, train_config):
    """`model_config` computing in the training config's `dtype` (parameters keep theirs)."""
    return dataclasses.replace(model_config, dtype=train_config.dtype)
