"""Thin Linen modules around the pure attention functions in `attention_jax.ops`."""

from attention_jax.layers.attention import (
    AdditiveAttention,
    LuongAttention,
    MultiHeadAttention,
    StructuredSelfAttention,
)

__all__ = ["AdditiveAttention", "LuongAttention", "MultiHeadAttention", "StructuredSelfAttention"]
