"""Plumbing shared by the model families: the padding id, dtype checks, Dense and LayerNorm layers
whose parameters carry logical axis names, the Transformer's residual sub-layer, and the
activation sharding constraint.

A model config here is any frozen dataclass with `dtype` (compute) and `param_dtype` (storage)
dtype names; `layer_norm` also reads `layer_norm_eps`, `residual` also `pre_ln` and
`dropout_rate`.

B batch, T length, D model dim.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

# Token id 0 is padding in every family: attention skips it as a key and losses ignore it.
PAD_ID = 0
# Glorot & Bengio's uniform initialiser, the default of every Dense kernel but BERT's.
default_kernel_init = nn.initializers.xavier_uniform()


def check_dtype_names(config):
    """Raises a ValueError unless `config.dtype` and `config.param_dtype` name dtypes."""
    for name in ("dtype", "param_dtype"):
        try:
            jnp.dtype(getattr(config, name))
        except TypeError:
            raise ValueError(f"{name} {getattr(config, name)!r} is not a dtype name") from None


def dtypes(config):
    """(compute dtype, parameter dtype) of a model config."""
    return jnp.dtype(config.dtype), jnp.dtype(config.param_dtype)


def dense(
    config,
    features,
    axes,
    name=None,
    *,
    kernel_init=default_kernel_init,
    use_bias=True,
):
    """A Dense layer in the config's dtypes; `axes` name the kernel's (in, out) dimensions and
    the (zero-initialised) bias takes the out one."""
    dtype, param_dtype = dtypes(config)
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(kernel_init, axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]),
        name=name,
    )


def layer_norm(config, name=None, *, use_fast_variance=True):
    """LayerNorm with epsilon `config.layer_norm_eps`; statistics in float32 whatever the dtype.

    Args:
      use_fast_variance: E[x²] − E[x]² in one pass; False computes E[(x − E[x])²] in two, as
        PyTorch does (the one-pass form loses digits).
    """
    dtype, param_dtype = dtypes(config)
    return nn.LayerNorm(
        epsilon=config.layer_norm_eps,
        use_fast_variance=use_fast_variance,
        dtype=dtype,
        param_dtype=param_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
        name=name,
    )


def constrain(x_BTD):
    """Activations between blocks: batch sharded as the rules say, length and model dim named."""
    return nn.with_logical_constraint(x_BTD, ("batch", "length", "embed"))


def residual(config, name, sublayer, x_BTD, deterministic):
    """A sub-layer with its residual connection (Vaswani et al. 2017, section 5.4):

        post-LN:  x = LayerNorm(x + Dropout(Sublayer(x)))      (the Transformer, GPT-1, BERT)
        pre-LN:   x = x + Dropout(Sublayer(LayerNorm(x)))      (GPT-2; Xiong et al. 2020)

    The LayerNorm is named f"{name}_norm".
    """
    dropout = nn.Dropout(config.dropout_rate)
    norm = layer_norm(config, f"{name}_norm")
    if config.pre_ln:
        return x_BTD + dropout(sublayer(norm(x_BTD)), deterministic=deterministic)
    return norm(x_BTD + dropout(sublayer(x_BTD), deterministic=deterministic))


def empty_cache(model, params, *args, **kwargs):
    """The zero "cache" collection of `model.apply(params, *args, decode=True, **kwargs)`, sized by
    the arguments (e.g. tokens as long as the longest decode); shapes only, nothing computed."""

    def shapes():
        _, variables = model.apply(
            {"params": params}, *args, decode=True, mutable=["cache"], **kwargs
        )
        return variables["cache"]

    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(shapes))


def layer_head_masks(head_mask, num_layers):
    """Each block's head mask ξ (Michel et al. 2019) from one of shape (num_layers, N) or
    (B, num_layers, N); None gives None for every block (all heads on)."""
    if head_mask is None:
        return [None] * num_layers
    if jnp.ndim(head_mask) not in (2, 3) or jnp.shape(head_mask)[-2] != num_layers:
        raise ValueError(f"head_mask {jnp.shape(head_mask)} needs {num_layers} layers")
    return [head_mask[..., i, :] for i in range(num_layers)]
