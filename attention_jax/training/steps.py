"""The pure train and eval steps, with gradient accumulation over micro-batches.

    train_step = make_train_step(task, tx, config)     # (state, batch) -> (state, metrics, finite)
    eval_step = make_eval_step(task)                   # (params, batch) -> metrics

Metrics map a name to a float32 `(sum, count)` pair: the task's own, plus "loss" (summed over
micro-batches, counted once each) and, in training, "grad_norm" and "learning_rate". Under
`pmap` (`axis_name` given) the sums and counts are added over devices and gradients averaged.

One train step: split the batch into `grad_accum_steps` micro-batches, sum their gradients with
`lax.scan`, divide by their number, update with the optimizer. If the loss or the gradient is not
finite the update is dropped (params and optimizer state unchanged, the step still counts) and
`finite` is False; the host loop then halts or skips per `nan_policy`. Step s draws its
randomness from `fold_in(state.rng, s)`, then the device index under pmap, then micro-batch i.

B batch (the micro-batch count has no letter: `num_micro`).
"""

import jax
import jax.numpy as jnp
import optax

from attention_jax.training import optim
from attention_jax.training.state import TrainState


def _as_float32(metrics):
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), metrics)


def micro_batches(batch, num_micro: int):
    """(B, ...) → (num_micro, B / num_micro, ...); micro-batch i takes rows i, i + num_micro,
    i + 2·num_micro, ... so that every device keeps its own rows of each micro-batch (no
    resharding)."""

    def split(x):
        return x.reshape(x.shape[0] // num_micro, num_micro, *x.shape[1:]).swapaxes(0, 1)

    return jax.tree.map(split, batch)


def make_train_step(task, tx: optax.GradientTransformation, config, axis_name=None):
    """`train_step(state, batch) -> (state, metrics, finite)`, pure; `axis_name` for pmap.

    Args:
      task: a `tasks.base.Task`; its `loss(params, batch, rng, train=True)` is differentiated.
      tx: the optimizer, from `optim.make_optimizer(config)`.
      config: the training config (`grad_accum_steps` and the learning-rate schedule).
      axis_name: the pmap axis to average gradients and add metrics over; None under jit.
    """
    grad_fn = jax.value_and_grad(task.loss, has_aux=True)
    schedule = optim.make_schedule(config)
    num_micro = config.grad_accum_steps

    def micro_step(params, micro_batch, rng):
        (loss, metrics), grads = grad_fn(params, micro_batch, rng, train=True)
        return grads, _as_float32({**metrics, "loss": (loss, 1.0)})

    def train_step(state: TrainState, batch):
        rng = jax.random.fold_in(state.rng, state.step)
        if axis_name is not None:
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        micro = micro_batches(batch, num_micro)

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


def make_eval_step(task, axis_name=None):
    """`eval_step(params, batch) -> metrics`: the task's loss and metrics with `train=False`
    (a fixed RNG key, unused by a deterministic model); `axis_name` for pmap."""

    def eval_step(params, batch):
        loss, metrics = task.loss(params, batch, jax.random.PRNGKey(0), train=False)
        metrics = _as_float32({**metrics, "loss": (loss, 1.0)})
        return metrics if axis_name is None else jax.lax.psum(metrics, axis_name)

    return eval_step
