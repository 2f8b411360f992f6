"""Open a training checkpoint in a notebook, on CPU, whatever mesh wrote it.

    from attention_jax import checkpoint
    restored = checkpoint.load("runs/bert_tiny")          # newest step; or step=1000
    averaged = checkpoint.average("runs/translate_transformer_small", last=5)  # mean params
    logits = restored.model.apply({"params": restored.params}, ...)

`restored.config` is the run's training config, `restored.model.config` the model's. A
checkpoint runs no code: it may name only the project's own models and those registered in
code, `checkpoint.register(MyModel)` (a Linen module whose `config` is a frozen dataclass).
"""

from attention_jax.training.checkpoint import Restored, average, load, register

__all__ = ["Restored", "average", "load", "register"]
