"""The shared training loop: pure steps compiled once, run over a device mesh.

    state = train(config, model, loss_fn, train_data, init_args, eval_data=None,
                  flops_per_example=None)

`loss_fn(params, batch, rng, *, model, train) -> (loss, metrics)` returns the scalar mean loss
of `batch` and a dict name → (sum, count); the loop averages metrics as Σsum / Σcount over
micro-batches, steps and devices, and adds "loss", "grad_norm" and "learning_rate" itself.

One step (`make_train_step`): split the batch into `grad_accum_steps` micro-batches, sum their
gradients with `lax.scan`, average, update with the optimizer; if the loss or the gradient is
not finite, the update is dropped (params and optimizer state unchanged) and the host halts or
skips per `nan_policy`. Step s draws its randomness from `fold_in(state.rng, s)`.

The host loop dispatches step s+1 before it reads step s's metrics, so the device never waits
for Python. It evaluates, logs and checkpoints every N steps, resumes from the newest checkpoint
that restores, and on SIGTERM saves and exits with status 0.
"""

import contextlib
import functools
import logging
import signal
import sys
import threading

import flax.jax_utils
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

from attention_jax.training import optim, sharding
from attention_jax.training.checkpoint import Checkpointer
from attention_jax.training.config import validate
from attention_jax.training.state import (
    TrainState,
    create_train_state,
    make_init_fn,
    overlay_params,
)
from attention_jax.training.writers import MetricWriter, Throughput, progress_bar

logger = logging.getLogger(__name__)


def _as_float32(metrics):
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), metrics)


def _micro_batches(batch, num_micro):
    """(B, ...) → (A, B/A, ...); micro-batch i takes rows i, i+A, i+2A, ... so that every
    device keeps its own rows of each micro-batch (no resharding)."""

    def split(x):
        return x.reshape(x.shape[0] // num_micro, num_micro, *x.shape[1:]).swapaxes(0, 1)

    return jax.tree.map(split, batch)


def make_train_step(model, loss_fn, tx, config, axis_name=None):
    """`train_step(state, batch) -> (state, metrics, finite)`, pure; `axis_name` for pmap."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    schedule = optim.make_schedule(config)
    num_micro = config.grad_accum_steps

    def micro_step(params, micro_batch, rng):
        (loss, metrics), grads = grad_fn(params, micro_batch, rng, model=model, train=True)
        return grads, _as_float32({**metrics, "loss": (loss, 1.0)})

    def train_step(state: TrainState, batch):
        rng = jax.random.fold_in(state.rng, state.step)
        if axis_name is not None:
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        micro = _micro_batches(batch, num_micro)

        def accumulate(total, xs):
            micro_batch, i = xs
            step_out = micro_step(state.params, micro_batch, jax.random.fold_in(rng, i))
            return jax.tree.map(jnp.add, total, step_out), None

        first = jax.tree.map(lambda x: x[0], micro)
        zeros = jax.tree.map(
            lambda s: jnp.zeros(s.shape, s.dtype),
            jax.eval_shape(micro_step, state.params, first, rng),
        )
        (grads, metrics), _ = jax.lax.scan(accumulate, zeros, (micro, jnp.arange(num_micro)))
        grads = jax.tree.map(lambda g: g / num_micro, grads)
        if axis_name is not None:
            grads = jax.lax.pmean(grads, axis_name)
            metrics = jax.lax.psum(metrics, axis_name)

        grad_norm = optax.global_norm(grads)
        loss_sum, loss_count = metrics["loss"]
        finite = jnp.isfinite(loss_sum / loss_count) & jnp.isfinite(grad_norm)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)

        def if_finite(new, old):
            return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

        new_state = state.replace(
            step=state.step + 1,
            params=if_finite(params, state.params),
            opt_state=if_finite(opt_state, state.opt_state),
        )
        metrics = {
            **metrics,
            "grad_norm": (grad_norm, 1.0),
            "learning_rate": (schedule(state.step), 1.0),
        }
        return new_state, _as_float32(metrics), finite

    return train_step


def make_eval_step(model, loss_fn, axis_name=None):
    """`eval_step(params, batch) -> metrics` (sum, count) with `train=False`."""

    def eval_step(params, batch):
        loss, metrics = loss_fn(params, batch, jax.random.PRNGKey(0), model=model, train=False)
        metrics = _as_float32({**metrics, "loss": (loss, 1.0)})
        return metrics if axis_name is None else jax.lax.psum(metrics, axis_name)

    return eval_step


class _JitRunner:
    """Global arrays over the mesh; the step is compiled once with in/out shardings.

    Parameter layouts come from the logical axis names through `out_shardings`; the model is
    traced under the mesh and the logical axis rules, so `nn.with_logical_constraint` on
    activations inside models takes effect too.
    """

    def __init__(self, config, model, loss_fn, tx):
        self.mesh = sharding.make_mesh(config)
        self.rules = tuple((name, axes) for name, axes in config.logical_axis_rules)
        self.batch_sharding = sharding.batch_sharding(self.mesh)
        self.batch_shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        self.step_fn = make_train_step(model, loss_fn, tx, config)
        self.eval_fn = make_eval_step(model, loss_fn)

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


class _PmapRunner:
    """Data parallelism with `jax.pmap`, kept for compatibility with older training code.

    The state is replicated on the local devices; checkpoints hold one (host) copy of it.
    """

    axis_name = "batch"

    def __init__(self, config, model, loss_fn, tx):
        self.devices = jax.local_devices()
        self.batch_shards = jax.device_count()
        self._train_step = jax.pmap(
            make_train_step(model, loss_fn, tx, config, self.axis_name),
            axis_name=self.axis_name,
            donate_argnums=0,
        )
        self._eval_step = jax.pmap(
            make_eval_step(model, loss_fn, self.axis_name), axis_name=self.axis_name
        )

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


def _check_batch(config, batch, batch_shards):
    """One-line ValueErrors for batches that do not fit the config or the devices."""
    rows = {np.shape(v)[0] for v in batch.values()}
    if len(rows) != 1:
        raise ValueError(f"training batch arrays disagree on the batch size: {sorted(rows)}")
    local_rows = rows.pop()
    if local_rows * jax.process_count() != config.batch_size:
        raise ValueError(
            f"training batch has {local_rows} rows on each of {jax.process_count()} process(es), "
            f"but batch_size={config.batch_size}"
        )
    micro = config.batch_size // config.grad_accum_steps
    if micro % batch_shards:
        raise ValueError(
            f"batch_size={config.batch_size} / grad_accum_steps={config.grad_accum_steps} = "
            f"{micro} is not divisible by the {batch_shards} batch shards (mesh data × fsdp)"
        )


def _count_tokens(config, batch) -> int:
    if config.tokens_key is None:
        return 0
    return int(np.count_nonzero(batch[config.tokens_key])) * jax.process_count()


class _Preemption:
    """SIGTERM (a TPU preemption notice) → stop at the next step boundary.

    With several processes, JAX's coordination service already receives the signal and
    `reached_preemption_sync_point` makes every process stop at the same step.
    """

    def __init__(self):
        self.requested = False
        self._previous = None
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        del signum, frame
        self.requested = True

    def reached(self, step: int) -> bool:
        if jax.process_count() == 1:
            return self.requested
        try:
            return multihost_utils.reached_preemption_sync_point(step)
        except RuntimeError:  # the coordination service runs without the preemption notifier
            return False

    def close(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class _MetricSums:
    """Host-side Σsum and Σcount per metric name."""

    def __init__(self):
        self.sums, self.counts = {}, {}

    def add(self, metrics):
        for name, (total, count) in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(total)
            self.counts[name] = self.counts.get(name, 0.0) + float(count)

    def means(self) -> dict[str, float]:
        return {name: self.sums[name] / max(self.counts[name], 1e-12) for name in self.sums}


def evaluate(eval_step, eval_data, num_eval_steps=None) -> dict[str, float]:
    """Averages the (sum, count) metrics of `eval_step(batch)` over `eval_data()` (or its first
    `num_eval_steps` batches)."""
    sums = _MetricSums()
    for i, batch in enumerate(eval_data()):
        if num_eval_steps is not None and i >= num_eval_steps:
            break
        sums.add(jax.device_get(eval_step(batch)))
    return sums.means()


def train(
    config,
    model: nn.Module,
    loss_fn,
    train_data,
    init_args,
    eval_data=None,
    flops_per_example: float | None = None,
    init_params=None,
) -> TrainState:
    """Trains `model` to `config.num_train_steps`, resuming from `<workdir>/checkpoints`.

    Args:
      config: a `training.default_config()` with fields overridden.
      model: a Linen module whose only required field is `config`, a frozen dataclass.
      loss_fn: `loss_fn(params, batch, rng, *, model, train) -> (loss, metrics)`.
      train_data: iterator of batches (dict of arrays); each process yields its own rows of the
        global batch. Its get_state()/set_state(), if present, are checkpointed and restored.
      init_args: `batch -> tuple` of positional arguments for `model.init`; it receives a
        one-row batch of zeros, so only shapes and dtypes matter.
      eval_data: callable returning a fresh iterable of eval batches; rows per batch must be
        divisible by the number of batch shards.
      flops_per_example: training FLOPs per example for the MFU estimate.
      init_params: pretrained parameters (a nested dict matching part of the model's "params",
        e.g. {"bert": encoder}) that replace the fresh initialisation; a resumed run ignores
        them and continues from its checkpoint.

    Returns:
      The final TrainState (replicated over local devices in pmap mode).

    Raises:
      ValueError: bad config, mesh or batch shapes (one line naming the problem).
      FloatingPointError: a non-finite loss or gradient with `nan_policy="halt"`.
    """
    validate(config)
    sharding.maybe_initialize_distributed(config)
    tx = optim.make_optimizer(config)
    runner_class = _JitRunner if config.parallelism == "jit" else _PmapRunner
    runner = runner_class(config, model, loss_fn, tx)

    train_iter = iter(train_data)
    peeked = next(train_iter)
    _check_batch(config, peeked, runner.batch_shards)
    example = {k: np.zeros_like(v[:1]) for k, v in peeked.items()}
    init = make_init_fn(model, tx, tuple(init_args(example)))
    state = runner.init_state(init, jax.random.PRNGKey(config.seed))
    if init_params is not None:
        params = overlay_params(runner.checkpoint_view(state).params, init_params)
        state = runner.from_checkpoint(runner.checkpoint_view(state).replace(params=params))

    checkpointer = Checkpointer(config, model) if config.checkpoint_every_steps else None
    if checkpointer is not None:
        restored = checkpointer.restore_latest(runner.abstract_state, train_iter)
        if restored is not None:
            state = runner.from_checkpoint(restored)
            if hasattr(train_iter, "set_state"):
                peeked = None  # the restored iterator continues where the checkpoint was taken
            else:
                logger.warning("train_data has no get_state/set_state: the resumed data differs")
            logger.warning("resumed from %s at step %d", checkpointer.directory, int(restored.step))

    loop = _Loop(config, runner, checkpointer, eval_data, flops_per_example)
    try:
        # Initialisation ran outside the mesh (its example batch has one row); steps run inside.
        with runner.tracing():
            return loop.run(state, train_iter, peeked)
    finally:
        loop.close()


class _Loop:
    """The host side of training: dispatch, metrics, evaluation, checkpoints, preemption."""

    def __init__(self, config, runner, checkpointer, eval_data, flops_per_example):
        self.config = config
        self.runner = runner
        self.checkpointer = checkpointer
        self.eval_data = eval_data
        self.writer = MetricWriter(config.workdir)
        self.throughput = Throughput(
            config.batch_size, flops_per_example, config.peak_flops_per_device
        )
        self.train_sums = _MetricSums()
        self.preemption = _Preemption()
        self.bar = None

    def _every(self, step: int, every: int) -> bool:
        return bool(every) and (step % every == 0 or step == self.config.num_train_steps)

    def _read(self, step, metrics, finite) -> None:
        """Brings one step's metrics to the host (waiting for it) and applies nan_policy."""
        if bool(finite):
            self.train_sums.add(jax.device_get(metrics))
            return
        loss_sum, loss_count = jax.device_get(metrics["loss"])
        grad_norm = float(jax.device_get(metrics["grad_norm"][0]))
        message = (
            f"non-finite loss or gradient at step {step} (loss={loss_sum / loss_count}, "
            f"grad_norm={grad_norm})"
        )
        if self.config.nan_policy == "skip":
            logger.warning("%s; update skipped (nan_policy='skip')", message)
            return
        raise FloatingPointError(
            f"{message}; training halted, last checkpoint kept (nan_policy='skip' skips such steps)"
        )

    def _eval_step(self, state, batch):
        return self.runner.eval_step(state, self.runner.put_batch(batch))

    def _save(self, step, state, eval_metrics) -> None:
        if self.checkpointer is not None:
            self.checkpointer.save(
                step, self.runner.checkpoint_view(state), self.train_iter, eval_metrics
            )

    def run(self, state, train_iter, peeked) -> TrainState:
        config = self.config
        self.train_iter = train_iter
        start = int(np.ravel(jax.device_get(state.step))[0])
        self.bar = progress_bar(config.num_train_steps, start, config.progress_bar)
        pending = None  # (step, metrics, finite) dispatched but not yet read
        for step in range(start + 1, config.num_train_steps + 1):
            batch = peeked if peeked is not None else next(train_iter)
            peeked = None
            state, metrics, finite = self.runner.train_step(state, self.runner.put_batch(batch))
            if pending is not None:
                self._read(*pending)
            pending = (step, metrics, finite)
            self.throughput.add(1, _count_tokens(config, batch))
            self.bar.update(1)

            preempted = self.preemption.reached(step)
            log = self._every(step, config.log_every_steps)
            do_eval = self.eval_data is not None and self._every(step, config.eval_every_steps)
            save = preempted or self._every(step, config.checkpoint_every_steps)
            if log or do_eval or save:
                self._read(*pending)
                pending = None
            if log:
                rates = self.throughput.rates()
                self.writer.write_scalars(step, "train", {**self.train_sums.means(), **rates})
                self.bar.set_postfix({k: f"{v:.3g}" for k, v in rates.items()}, refresh=False)
                self.train_sums = _MetricSums()
            eval_metrics = None
            if do_eval:
                eval_metrics = evaluate(
                    functools.partial(self._eval_step, state),
                    self.eval_data,
                    config.num_eval_steps,
                )
                self.writer.write_scalars(step, "eval", eval_metrics)
            if save:
                self._save(step, state, eval_metrics)
            if preempted:
                self.close()
                logger.warning("SIGTERM: saved a checkpoint at step %d; exiting", step)
                sys.exit(0)
        return state

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.wait()
            self.checkpointer.close()
            self.checkpointer = None
        self.writer.close()
        self.preemption.close()
        if self.bar is not None:
            self.bar.close()
