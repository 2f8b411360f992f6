"""The one training loop every experiment uses.

    from attention_jax import training

    config = training.default_config()   # every field, with a comment, in training/config.py
    config.workdir = "runs/bert_tiny"
    state = training.train(config, model, loss_fn, train_data, init_args, eval_data=None,
                           flops_per_example=None)

- `model`: a Linen module whose only required field is `config`, a frozen dataclass; the
  checkpoint stores its import path and config so `attention_jax.checkpoint.load` rebuilds it.
- `loss_fn(params, batch, rng, *, model, train) -> (loss, metrics)`: `loss` is the scalar mean
  over the batch, `metrics` maps a name to `(sum, count)`.
- `train_data`: iterator of dict[str, np.ndarray]; each process yields its own rows of the
  global batch of `config.batch_size` rows. get_state()/set_state() (grain iterators have
  them) are checkpointed, so resumed runs see the same data.
- `init_args(batch) -> tuple`: positional arguments of `model.init` built from a batch.
- `eval_data`: callable returning a fresh iterable of eval batches.
- `flops_per_example`: training FLOPs per example, for the MFU shown when
  `config.peak_flops_per_device` is set.

Runs resume from `<workdir>/checkpoints`, stop cleanly on SIGTERM (checkpoint, exit 0), and
halt on a non-finite loss or gradient (`FloatingPointError`) unless `nan_policy="skip"`.
"""

from attention_jax.training.checkpoint import Restored, load
from attention_jax.training.config import default_config, validate
from attention_jax.training.loop import evaluate, make_eval_step, make_train_step, train
from attention_jax.training.optim import make_optimizer, make_schedule
from attention_jax.training.sharding import make_mesh
from attention_jax.training.state import TrainState

__all__ = [
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
    "train",
    "validate",
]
