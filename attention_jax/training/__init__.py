"""The one training loop every experiment uses.

    from attention_jax import training

    config = training.default_config()   # every field, with a comment, in training/config.py
    config.workdir = "runs/bert_tiny"
    config = training.resolve_durations(config, num_train_examples)  # epochs → steps, if used
    try:
        state = training.train(config, task, train_data, eval_data=None,
                               flops_per_example=None, init_params=None)
    except training.Preempted as stop:   # SIGTERM: a checkpoint at stop.step was saved
        ...

- `task`: a `attention_jax.tasks.base.Task`. `task.model` is a Linen module whose only required
  field is `config`, a frozen dataclass; it is initialised on `task.inputs(batch)` of a one-row
  batch of zeros, and the checkpoint stores its import path and config so
  `attention_jax.checkpoint.load` rebuilds it (the project's own models, or one a task module
  registered with `checkpoint.register`). `task.loss(params, batch, rng, *, train)` returns
  `(loss, metrics)`: the scalar mean loss over the batch and a dict name → `(sum, count)`.
- `train_data`: iterator of dict[str, np.ndarray]; each process yields its own rows of the
  global batch of `config.batch_size` rows. get_state()/set_state() (grain iterators have
  them) are checkpointed, so resumed runs see the same data.
- `eval_data`: callable returning a fresh iterable of eval batches.
- `flops_per_example`: training FLOPs per example, for the MFU shown when
  `config.peak_flops_per_device` is set.
- `init_params`: pretrained parameters overlaid on the fresh initialisation (fine-tuning).

Metrics are averaged as Σsum / Σcount over micro-batches, steps and devices; the loop adds
"loss", "grad_norm" and "learning_rate". Durations are in steps, or in epochs
(`num_train_epochs`) and as a warmup proportion (`warmup_proportion`) that `resolve_durations`
turns into steps before `train`.

Runs resume from `<workdir>/checkpoints`, stop cleanly on SIGTERM (checkpoint, then raise
`Preempted`; `attention_jax.cli.run` exits 0 on it), and halt on a non-finite loss or gradient
(`FloatingPointError`) unless `nan_policy="skip"`.

Modules: steps.py (pure train/eval steps), runners.py (jit over the mesh, or pmap), metrics.py
(host-side sums, `evaluate`), loop.py (the host loop and `train`), checkpoint.py, config.py,
optim.py, sharding.py, state.py, writers.py.
"""

from attention_jax.training.checkpoint import Restored, load
from attention_jax.training.config import default_config, resolve_durations, validate
from attention_jax.training.loop import Preempted, train
from attention_jax.training.metrics import evaluate
from attention_jax.training.optim import make_optimizer, make_schedule
from attention_jax.training.sharding import make_mesh
from attention_jax.training.state import TrainState
from attention_jax.training.steps import make_eval_step, make_train_step

__all__ = [
    "Preempted",
    "Restored",
    "TrainState",
    "default_config",
    "evaluate",
    "load",
    "make_eval_step",
    "make_mesh",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "resolve_durations",
    "train",
    "validate",
]
