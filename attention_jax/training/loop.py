"""The host loop: `train(config, task, train_data, eval_data)` from a config to a trained state.

    state = train(config, task, train_data, eval_data=None, flops_per_example=None,
                  init_params=None)

`train` checks the config and the first batch, builds the optimizer and the runner (`jit` over
the mesh or `pmap`, see runners.py), initialises the state in its sharded layout (or overlays
pretrained parameters on it), resumes from the newest checkpoint that restores, and runs the
host loop. The loop dispatches step s+1 before it reads step s's metrics, so the device never
waits for Python; it logs, evaluates and checkpoints every N steps and at the end.

On SIGTERM (a preemption notice) the loop stops at the next step boundary, saves a checkpoint
and raises `Preempted`; the caller decides how to exit (rerunning resumes from the checkpoint).
A non-finite loss or gradient raises `FloatingPointError`, or is skipped with
`nan_policy="skip"`.
"""

import functools
import logging
import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

from attention_jax.training import optim, sharding
from attention_jax.training.checkpoint import Checkpointer
from attention_jax.training.config import check_resolved, validate
from attention_jax.training.metrics import MetricSums, count_tokens, evaluate
from attention_jax.training.runners import make_runner
from attention_jax.training.state import TrainState, make_init_fn, overlay_params
from attention_jax.training.writers import MetricWriter, Throughput, progress_bar

logger = logging.getLogger(__name__)


class Preempted(Exception):
    """`train` stopped on a preemption notice (SIGTERM) at `step`, after saving a checkpoint.

    Rerunning the same command resumes from that checkpoint. Scripts turn this into exit status
    0 (`attention_jax.cli.run`); library code never exits the process.

    Attributes:
      step: the optimizer steps taken when training stopped.
      saved: False only when checkpointing is off (`checkpoint_every_steps=0`).
    """

    def __init__(self, step: int, saved: bool = True):
        self.step = step
        self.saved = saved
        if saved:
            message = f"SIGTERM: saved a checkpoint at step {step}"
        else:
            message = f"SIGTERM at step {step}: nothing saved (checkpoint_every_steps=0)"
        super().__init__(message)

    def __reduce__(self):
        return type(self), (self.step, self.saved)


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


def train(
    config,
    task,
    train_data,
    eval_data=None,
    flops_per_example: float | None = None,
    init_params=None,
) -> TrainState:
    """Trains `task.model` to `config.num_train_steps`, resuming from `<workdir>/checkpoints`.

    Args:
      config: a `training.default_config()` with fields overridden, its durations resolved
        (`resolve_durations` where they are given in epochs or as a warmup proportion).
      task: a `tasks.base.Task`. `task.model` (whose only required field is `config`, a frozen
        dataclass) is initialised on `task.inputs` of a one-row batch of zeros, so only shapes
        and dtypes matter there, and described in every checkpoint; `task.loss(params, batch,
        rng, train=...)` is what the steps differentiate and evaluate.
      train_data: iterator of batches (dict of arrays); each process yields its own rows of the
        global batch. Its get_state()/set_state(), if present, are checkpointed and restored.
      eval_data: callable returning a fresh iterable of eval batches; rows per batch must be
        divisible by the number of batch shards.
      flops_per_example: training FLOPs per example for the MFU estimate.
      init_params: pretrained parameters (a nested dict matching part of the model's "params",
        e.g. {"bert": encoder}) that replace the fresh initialisation; a resumed run ignores
        them and continues from its checkpoint.

    Returns:
      The final TrainState (replicated over local devices in pmap mode).

    Raises:
      ValueError: bad or unresolved config, mesh or batch shapes (one line naming the problem).
      FloatingPointError: a non-finite loss or gradient with `nan_policy="halt"`.
      Preempted: SIGTERM arrived; a checkpoint of the step reached was saved first.
    """
    validate(config)
    check_resolved(config)
    sharding.maybe_initialize_distributed(config)
    tx = optim.make_optimizer(config)
    runner = make_runner(config, task, tx)

    train_iter = iter(train_data)
    peeked = next(train_iter)
    _check_batch(config, peeked, runner.batch_shards)
    example = {k: np.zeros_like(v[:1]) for k, v in peeked.items()}
    init = make_init_fn(task.model, tx, tuple(task.inputs(example)))
    state = runner.init_state(init, jax.random.PRNGKey(config.seed))
    if init_params is not None:
        params = overlay_params(runner.checkpoint_view(state).params, init_params)
        state = runner.from_checkpoint(runner.checkpoint_view(state).replace(params=params))

    checkpointer = Checkpointer(config, task.model) if config.checkpoint_every_steps else None
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
        self.train_sums = MetricSums()
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
            self.throughput.add(1, count_tokens(batch, config.tokens_key))
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
                self.train_sums = MetricSums()
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
                # `train` closes the loop, which waits for the checkpoint to be written.
                raise Preempted(step, saved=self.checkpointer is not None)
        return state

    def close(self) -> None:
        """Finishes pending checkpoint writes and releases the writer, signal handler and bar."""
        if self.checkpointer is not None:
            self.checkpointer.wait()
            self.checkpointer.close()
            self.checkpointer = None
        self.writer.close()
        self.preemption.close()
        if self.bar is not None:
            self.bar.close()
