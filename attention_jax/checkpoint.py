"""Open a training checkpoint in a notebook, on CPU, whatever mesh wrote it.

    from attention_jax import checkpoint
    restored = checkpoint.load("runs/bert_tiny")          # newest step; or step=1000
    logits = restored.model.apply({"params": restored.params}, ...)

`restored.config` is the run's training config, `restored.model.config` the model's.
"""

from attention_jax.training.checkpoint import Restored, load

__all__ = ["Restored", "load"]
