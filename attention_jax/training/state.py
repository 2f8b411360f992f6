"""The train state, and its creation directly in its sharded layout.

`jax.eval_shape` traces the initialiser to get shapes and the logical axis names the model put on
its parameters; those become `out_shardings` of a jitted initialiser, so every device creates
only its own shard and a large model never materialises on one device.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util


@flax.struct.dataclass
class TrainState:
    """Everything a step changes: all arrays, so Orbax saves it and jit can donate it.

    Attributes:
      step: number of optimizer steps taken (int32 scalar).
      params: the model's "params" collection, float32.
      opt_state: the optax state for `params`.
      rng: a raw uint32[2] key; step s uses `fold_in(rng, s)`, so a resumed run draws the same
        dropout/masking randomness as an uninterrupted one.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def make_init_fn(model: nn.Module, tx: optax.GradientTransformation, init_args: tuple):
    """`init(rng) -> TrainState` whose params and optimizer state keep their logical-axis boxes.

    `init_args` are the positional example inputs of `model.init` (constants, shapes only).
    """

    def init(rng) -> TrainState:
        params_rng, dropout_rng, state_rng = jax.random.split(rng, 3)
        variables = model.init({"params": params_rng, "dropout": dropout_rng}, *init_args)
        params = variables["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=state_rng
        )

    return init


def create_train_state(
    init: Callable[[jax.Array], TrainState], rng: jax.Array, shardings_fn: Callable[[Any], Any]
) -> tuple[TrainState, Any]:
    """Runs `init` under jit so that each leaf is born with its sharding.

    Args:
      init: from `make_init_fn`.
      rng: the run's seed key.
      shardings_fn: maps the abstract (boxed) state to a tree of shardings for the unboxed one.

    Returns:
      (state, shardings), with plain arrays (no logical-axis boxes) in `state`.
    """
    abstract = jax.eval_shape(init, rng)
    shardings = shardings_fn(abstract)
    state = jax.jit(lambda r: nn.meta.unbox(init(r)), out_shardings=shardings)(rng)
    return state, shardings


def overlay_params(params, pretrained):
    """`params` with the leaves that `pretrained` has (same nesting) replaced, layouts kept.

    Raises a one-line ValueError for a pretrained leaf the model lacks or has in another shape.
    """
    flat = traverse_util.flatten_dict(params)
    for path, value in traverse_util.flatten_dict(pretrained).items():
        name = "/".join(path)
        if path not in flat:
            raise ValueError(f"pretrained parameter {name} is not a parameter of the model")
        leaf = flat[path]
        if np.shape(value) != leaf.shape:
            raise ValueError(
                f"pretrained parameter {name} has shape {np.shape(value)}, the model {leaf.shape}"
            )
        value = np.asarray(value, leaf.dtype)
        flat[path] = jax.device_put(value, leaf.sharding) if isinstance(leaf, jax.Array) else value
    return traverse_util.unflatten_dict(flat)
