"""Optimizers (AdamW, google-research/bert's AdamW, LAMB, SGD) with clipping, and the schedules.

Schedules, with peak rate η, warmup W and total steps S (step s counts finished updates):
  warmup       η · min(1, s / W)                         (all schedules; none when W = 0)
  linear       then η · (S − s) / (S − W)                 decay from the end of warmup
  bert_linear  then η · (1 − s / S)                       google-research/bert: decay from step 0
  inverse_sqrt then η · sqrt(W / s)                       Noam (Vaswani et al. 2017, eq. 3)
  cosine       then η · ½ (1 + cos(π (s − W) / (S − W)))
  constant     then η

Optimizers, after clipping to `grad_clip_norm`, with decoupled weight decay λ on the parameters
`decay_mask` selects:
  adamw        optax.adamw: bias-corrected Adam (Loshchilov & Hutter 2019)
  bert_adamw   google-research/bert's AdamWeightDecayOptimizer: Adam without bias correction,
               w ← w − η (m / (√v + ε) + λ w)
  lamb         optax.lamb (You et al. 2020)
  sgd          heavy-ball momentum μ (optax.sgd), with λ w added to the gradient (L2, coupled):
               m ← μ m + g + λ w, w ← w − η m
"""

import re

import jax
import jax.numpy as jnp
import optax

# Searched in each parameter's path ("/"-joined): no weight decay for what matches. Every bias
# (also `mlm_output_bias`, RNN gate biases `b_0`...) and every normalisation parameter, as
# google-research/bert's exclude_from_weight_decay=["LayerNorm", "layer_norm", "bias"] does.
NO_DECAY_PATTERN = r"bias|norm|(^|/)(scale|b_\d+)$"


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
        elif config.schedule == "bert_linear":  # Warmup replaces the decay, not scales it.
            decay = jnp.where(s < warmup, 1.0, jnp.clip(1.0 - s / max(total, 1), 0.0, 1.0))
        elif config.schedule == "inverse_sqrt":
            w = max(warmup, 1)
            decay = jnp.sqrt(w / jnp.maximum(s, w))
        elif config.schedule == "cosine":
            decay = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        else:
            decay = 1.0
        return peak * warm * decay

    return schedule


def decay_mask(params, pattern: str = NO_DECAY_PATTERN):
    """True for parameters that get weight decay: those whose path `pattern` does not match."""
    no_decay = re.compile(pattern)

    def decays(path, _):
        names = [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]
        return not no_decay.search("/".join(names))

    return jax.tree_util.tree_map_with_path(decays, params)


def scale_by_adam_without_bias_correction(b1, b2, eps) -> optax.GradientTransformation:
    """m / (√v + ε) with m, v the moving averages of g and g², not bias-corrected: the update
    direction of google-research/bert's AdamWeightDecayOptimizer."""

    def init(params):
        zeros = jax.tree.map(lambda p: jnp.zeros_like(p, jnp.float32), params)
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=zeros, nu=zeros)

    def update(updates, state, params=None):
        del params
        mu = jax.tree.map(lambda g, m: b1 * m + (1 - b1) * g, updates, state.mu)
        nu = jax.tree.map(lambda g, v: b2 * v + (1 - b2) * g * g, updates, state.nu)
        updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
        return updates, optax.ScaleByAdamState(count=state.count + 1, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


def make_optimizer(config) -> optax.GradientTransformation:
    """Clipping (if `grad_clip_norm`) then the optimizer on the schedule, decay masked."""
    schedule = make_schedule(config)

    def mask(params):
        return decay_mask(params, config.weight_decay_exclude)

    if config.optimizer == "sgd":
        optimizer = optax.chain(
            optax.add_decayed_weights(config.weight_decay, mask),
            optax.sgd(schedule, momentum=config.momentum or None),
        )
    elif config.optimizer == "bert_adamw":
        optimizer = optax.chain(
            scale_by_adam_without_bias_correction(config.b1, config.b2, config.eps),
            optax.add_decayed_weights(config.weight_decay, mask),
            optax.scale_by_learning_rate(schedule),
        )
    else:
        kwargs = dict(
            learning_rate=schedule,
            b1=config.b1,
            b2=config.b2,
            eps=config.eps,
            weight_decay=config.weight_decay,
            mask=mask,
        )
        optimizer = optax.adamw(**kwargs) if config.optimizer == "adamw" else optax.lamb(**kwargs)
    if config.grad_clip_norm is None:
        return optimizer
    return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), optimizer)
