"""Where the steps run: compiled once over a device mesh (`jit`) or replicated per device (`pmap`).

`make_runner(config, task, tx)` picks one by `config.parallelism`. Both give the host loop the
same interface:

    runner.batch_shards                       how many ways the batch dimension is split
    runner.tracing()                          the context every trace of the model runs in
    runner.init_state(init, rng) -> state     and sets runner.abstract_state (for restoring)
    runner.put_batch(local_batch)             this process's rows → the step's input layout
    runner.train_step(state, batch) -> (state, metrics, finite)
    runner.eval_step(state, batch) -> metrics
    runner.checkpoint_view(state)             the state as checkpoints hold it
    runner.from_checkpoint(state)             and back

Metrics and `finite` come back as device arrays, not yet read, so the host can dispatch the
next step first. The two runners compute the same numbers (tests/training/test_distributed.py).
"""

import contextlib

import flax.jax_utils
import flax.linen as nn
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

from attention_jax.training import sharding
from attention_jax.training.state import create_train_state
from attention_jax.training.steps import make_eval_step, make_train_step


class JitRunner:
    """Global arrays over the mesh; the step is compiled once with in/out shardings.

    Parameter layouts come from the logical axis names through `out_shardings`; the model is
    traced under the mesh and the logical axis rules, so `nn.with_logical_constraint` on
    activations inside models takes effect too.
    """

    def __init__(self, config, task, tx):
        self.mesh = sharding.make_mesh(config)
        self.rules = tuple((name, axes) for name, axes in config.logical_axis_rules)
        self.batch_sharding = sharding.batch_sharding(self.mesh)
        self.batch_shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        self.step_fn = make_train_step(task, tx, config)
        self.eval_fn = make_eval_step(task)

    def tracing(self):
        """The context every trace of the model runs in."""
        stack = contextlib.ExitStack()
        stack.enter_context(jax.set_mesh(self.mesh))
        stack.enter_context(nn.logical_axis_rules(self.rules))
        return stack

    def init_state(self, init, rng):
        state, shardings = create_train_state(
            init, rng, lambda a: sharding.logical_shardings(a, self.mesh, self.rules)
        )
        self.abstract_state = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
        )
        replicated = NamedSharding(self.mesh, PartitionSpec())
        # Compiled on the first batch, and once more per new batch shape (e.g. BERT's switch
        # from 128- to 512-token sequences); every step after that reuses the executable.
        self._train_step = jax.jit(
            self.step_fn,
            in_shardings=(shardings, self.batch_sharding),
            out_shardings=(shardings, replicated, replicated),
            donate_argnums=0,
        )
        self._eval_step = jax.jit(
            self.eval_fn,
            in_shardings=(shardings.params, self.batch_sharding),
            out_shardings=replicated,
        )
        return state

    def put_batch(self, batch):
        return sharding.global_batch(batch, self.batch_sharding)

    def train_step(self, state, batch):
        return self._train_step(state, batch)

    def eval_step(self, state, batch):
        return self._eval_step(state.params, batch)

    def checkpoint_view(self, state):
        return state

    def from_checkpoint(self, state):
        return state


class PmapRunner:
    """Data parallelism with `jax.pmap`: a first-class mode, kept for older training code that
    compiles with pmap, and tested to train the same parameters as `JitRunner`.

    The state is replicated on the local devices (a leading device axis on every leaf); each
    device gets its rows of the batch, gradients are averaged and metrics added with
    collectives over `axis_name`. Checkpoints hold one (host) copy of the state.
    """

    axis_name = "batch"

    def __init__(self, config, task, tx):
        self.devices = jax.local_devices()
        self.batch_shards = jax.device_count()
        self._train_step = jax.pmap(
            make_train_step(task, tx, config, self.axis_name),
            axis_name=self.axis_name,
            donate_argnums=0,
        )
        self._eval_step = jax.pmap(make_eval_step(task, self.axis_name), axis_name=self.axis_name)

    def tracing(self):
        return contextlib.nullcontext()

    def init_state(self, init, rng):
        device = SingleDeviceSharding(self.devices[0])
        state, _ = create_train_state(init, rng, lambda abstract: device)
        self.abstract_state = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), state
        )
        return self.from_checkpoint(state)

    def put_batch(self, batch):
        n = len(self.devices)
        return {
            k: np.asarray(v).reshape(n, v.shape[0] // n, *v.shape[1:]) for k, v in batch.items()
        }

    def train_step(self, state, batch):
        new_state, metrics, finite = self._train_step(state, batch)
        return new_state, jax.tree.map(lambda x: x[0], metrics), finite[0]

    def eval_step(self, state, batch):
        return jax.tree.map(lambda x: x[0], self._eval_step(state.params, batch))

    def checkpoint_view(self, state):
        return jax.device_get(jax.tree.map(lambda x: x[0], state))

    def from_checkpoint(self, state):
        return flax.jax_utils.replicate(state, self.devices)


def make_runner(config, task, tx) -> JitRunner | PmapRunner:
    """The runner `config.parallelism` names ("jit" or "pmap")."""
    runner_class = JitRunner if config.parallelism == "jit" else PmapRunner
    return runner_class(config, task, tx)
