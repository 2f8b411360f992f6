"""Attention as pure array functions: no parameters, no Flax. Masks are boolean, True = attend."""

from attention_jax.ops.additive import additive_attention
from attention_jax.ops.dot_product import dot_product_attention
from attention_jax.ops.luong import luong_attention
from attention_jax.ops.masks import (
    causal_mask,
    combine_masks,
    cross_mask,
    masked_softmax,
    padding_mask,
    segment_mask,
)
from attention_jax.ops.positions import (
    alibi_bias,
    alibi_slopes,
    rotary_embedding,
    sinusoidal_positions,
)
from attention_jax.ops.structured import attention_penalty, structured_self_attention

__all__ = [
    "additive_attention",
    "alibi_bias",
    "alibi_slopes",
    "attention_penalty",
    "causal_mask",
    "combine_masks",
    "cross_mask",
    "dot_product_attention",
    "luong_attention",
    "masked_softmax",
    "padding_mask",
    "rotary_embedding",
    "segment_mask",
    "sinusoidal_positions",
    "structured_self_attention",
]
