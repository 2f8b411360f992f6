"""Optimizers (AdamW, LAMB) with gradient clipping, and the learning-rate schedules.

Schedules, with peak rate η, warmup W and total steps S (step s counts finished updates):
  warmup       η · min(1, s / W)                         (all schedules; none when W = 0)
  linear       then η · (S − s) / (S − W)                 BERT (Devlin et al. 2019)
  inverse_sqrt then η · sqrt(W / s)                       Noam (Vaswani et al. 2017, eq. 3)
  cosine       then η · ½ (1 + cos(π (s − W) / (S − W)))
  constant     then η
"""

import jax
import jax.numpy as jnp
import optax

# Leaf names of biases and LayerNorm/RMSNorm parameters: no weight decay (BERT, GPT-2 practice).
NO_DECAY_NAMES = ("bias", "scale")


def make_schedule(config) -> optax.Schedule:
    """The learning rate as a function of the step, from the config fields listed above."""
    peak, warmup, total = config.learning_rate, config.warmup_steps, config.num_train_steps
    decay_steps = max(total - warmup, 1)

    def schedule(step):
        s = jnp.asarray(step, jnp.float32)
        warm = jnp.minimum(1.0, s / warmup) if warmup else 1.0
        progress = jnp.clip((s - warmup) / decay_steps, 0.0, 1.0)
        if config.schedule == "linear":
            decay = 1.0 - progress
        elif config.schedule == "inverse_sqrt":
            w = max(warmup, 1)
            decay = jnp.sqrt(w / jnp.maximum(s, w))
        elif config.schedule == "cosine":
            decay = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        else:
            decay = 1.0
        return peak * warm * decay

    return schedule


def decay_mask(params):
    """True for parameters that get weight decay: everything but biases and norm parameters."""

    def decays(path, _):
        names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
        return names[-1] not in NO_DECAY_NAMES

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(config) -> optax.GradientTransformation:
    """Clipping (if `grad_clip_norm`) then AdamW or LAMB on the schedule, decay masked."""
    kwargs = dict(
        learning_rate=make_schedule(config),
        b1=config.b1,
        b2=config.b2,
        eps=config.eps,
        weight_decay=config.weight_decay,
        mask=decay_mask,
    )
    optimizer = optax.adamw(**kwargs) if config.optimizer == "adamw" else optax.lamb(**kwargs)
    if config.grad_clip_norm is None:
        return optimizer
    return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), optimizer)
