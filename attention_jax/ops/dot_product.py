"""Scaled dot-product attention (Vaswani et al. 2017, eq. 1) with grouped key/value heads.

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V

Query heads are split into K groups that share one key/value head each (N = K: multi-head,
K = 1: multi-query, otherwise grouped-query attention).

B batch, T query length, S key length, N query heads, K key/value heads, G = N // K query heads
per key/value head, H head dim.

`implementation=None` routes to the fused kernel of the platform where it applies: cuDNN on GPU
for half precision, the Pallas splash kernel on TPU (`ops/splash.py`); otherwise to the chunked
online softmax (`ops/chunked.py`) once the T×S logits get large, else to the einsum reference.
"""

import jax
import jax.numpy as jnp

from attention_jax.ops import chunked, splash
from attention_jax.ops.masks import causal_mask, combine_masks, masked_softmax, segment_mask

IMPLEMENTATIONS = (None, "xla", "chunked", "cudnn", "splash")


def dot_product_attention(
    q_BTNH,
    k_BSKH,
    v_BSKH,
    *,
    mask=None,
    segment_ids=None,
    bias=None,
    is_causal=False,
    scale=None,
    dropout_rate=0.0,
    dropout_rng=None,
    implementation=None,
    return_weights=False,
):
    """Multi-head attention over already projected heads.

    Args:
      mask: boolean, True = attend, broadcastable to (B, N, T, S): a (T, S) or 4-D array.
      segment_ids: (segment_q_BT, segment_k_BS) integer ids of packed sequences: attend only
        within the same segment, id 0 is padding (`ops.segment_mask`, combined with `mask`).
      bias: additive logits bias broadcastable to (B, N, T, S), e.g. relative positions.
      is_causal: query t attends only keys s <= t (combined with `mask`).
      scale: logits multiplier; 1/√H by default.
      dropout_rate: attention-weight dropout (needs `dropout_rng` when > 0).
      implementation: "xla" (einsum reference), "chunked" (memory-linear online softmax),
        "cudnn" (fused GPU kernel), "splash" (fused Pallas TPU kernel: T and S multiples of 128,
        masks only a key padding mask, `segment_ids` and `is_causal`, no bias or dropout) or
        None to pick the best for the platform and shapes.
      return_weights: also return the float32 attention weights_BNTS (xla only).

    Returns:
      out_BTNH, or (out_BTNH, weights_BNTS) when `return_weights`.
    """
    B, T, N, H = q_BTNH.shape
    S, K = k_BSKH.shape[1], k_BSKH.shape[2]
    if k_BSKH.shape != v_BSKH.shape or k_BSKH.shape[0] != B or k_BSKH.shape[3] != H:
        raise ValueError(f"q {q_BTNH.shape}, k {k_BSKH.shape}, v {v_BSKH.shape} do not match")
    if N % K:
        raise ValueError(f"query heads ({N}) must be a multiple of key/value heads ({K})")
    for name, x in (("mask", mask), ("bias", bias)):
        if x is not None and x.ndim not in (2, 4):
            raise ValueError(
                f"{name} must be (T, S) or broadcastable to (B, N, T, S), got {x.shape}"
            )
    if segment_ids is not None and (
        segment_ids[0].shape != (B, T) or segment_ids[1].shape != (B, S)
    ):
        raise ValueError(
            f"segment_ids must be (B, T) and (B, S) ids, got {segment_ids[0].shape}, "
            f"{segment_ids[1].shape}"
        )
    if dropout_rate > 0.0 and dropout_rng is None:
        raise ValueError("dropout_rate > 0 needs a dropout_rng")
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    scale = H**-0.5 if scale is None else scale
    if implementation is None:
        implementation = _choose_implementation(q_BTNH, S, mask, bias, dropout_rate, return_weights)
    if return_weights and implementation != "xla":
        raise ValueError(f"return_weights needs implementation='xla', not {implementation!r}")

    if implementation == "splash":
        if bias is not None or dropout_rate > 0.0:
            raise ValueError("implementation='splash' supports no bias and no attention dropout")
        if jax.default_backend() != "tpu":
            raise ValueError(
                f"implementation='splash' needs a TPU; this is {jax.default_backend()}"
            )
        return splash.splash_attention(
            q_BTNH,
            k_BSKH,
            v_BSKH,
            mask=mask,
            segment_ids=segment_ids,
            is_causal=is_causal,
            scale=scale,
        )
    if segment_ids is not None:
        mask = combine_masks(mask, segment_mask(*segment_ids)[:, None])

    if implementation == "cudnn":
        if jax.default_backend() != "gpu":
            raise ValueError(f"implementation='cudnn' needs a GPU; this is {jax.default_backend()}")
        if dropout_rate > 0.0:
            raise ValueError("implementation='cudnn' does not support attention dropout here")
        mask = (
            None
            if mask is None
            else jnp.broadcast_to(mask, (B, N, T, S))
            if mask.ndim == 2
            else mask
        )
        return jax.nn.dot_product_attention(
            q_BTNH,
            k_BSKH,
            v_BSKH,
            bias=bias,
            mask=mask,
            is_causal=is_causal,
            scale=scale,
            implementation="cudnn",
        )
    if implementation == "chunked":
        return chunked.chunked_attention(
            q_BTNH,
            k_BSKH,
            v_BSKH,
            mask=mask,
            bias=bias,
            is_causal=is_causal,
            scale=scale,
            dropout_rate=dropout_rate,
            dropout_rng=dropout_rng,
        )
    return _xla_attention(
        q_BTNH,
        k_BSKH,
        v_BSKH,
        mask,
        bias,
        is_causal,
        scale,
        dropout_rate,
        dropout_rng,
        return_weights,
    )


def _xla_attention(
    q_BTNH, k_BSKH, v_BSKH, mask, bias, is_causal, scale, dropout_rate, dropout_rng, return_weights
):
    """The reference path: materialise logits_BNTS, float32 softmax, einsum with values."""
    B, T, N, H = q_BTNH.shape
    S, K = k_BSKH.shape[1], k_BSKH.shape[2]
    q_BTKGH = q_BTNH.reshape(B, T, K, N // K, H)
    logits_BKGTS = jnp.einsum("BTKGH,BSKH->BKGTS", q_BTKGH, k_BSKH).astype(jnp.float32) * scale
    logits_BNTS = logits_BKGTS.reshape(B, N, T, S)
    if bias is not None:
        logits_BNTS = logits_BNTS + bias.astype(jnp.float32)
    mask = combine_masks(mask, causal_mask(T, S) if is_causal else None)
    weights_BNTS = masked_softmax(logits_BNTS, mask)
    probs_BNTS = weights_BNTS
    if dropout_rate > 0.0:
        keep_BNTS = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights_BNTS.shape)
        probs_BNTS = jnp.where(keep_BNTS, weights_BNTS / (1.0 - dropout_rate), 0.0)
    probs_BKGTS = probs_BNTS.astype(v_BSKH.dtype).reshape(B, K, N // K, T, S)
    out_BTNH = jnp.einsum("BKGTS,BSKH->BTKGH", probs_BKGTS, v_BSKH).reshape(B, T, N, H)
    return (out_BTNH, weights_BNTS) if return_weights else out_BTNH


def _choose_implementation(q_BTNH, S, mask, bias, dropout_rate, return_weights):
    """cudnn on GPU for half precision; splash on TPU where the kernel applies; chunked once the
    T×S logits get large; else xla."""
    if return_weights:
        return "xla"
    if (
        jax.default_backend() == "tpu"
        and bias is None
        and dropout_rate == 0.0
        and splash.unsupported(q_BTNH.shape[1], S, mask) is None
    ):
        return "splash"
    if (
        jax.default_backend() == "gpu"
        and q_BTNH.dtype in (jnp.bfloat16, jnp.float16)
        and dropout_rate == 0.0
    ):
        return "cudnn"
    return "chunked" if q_BTNH.shape[1] * S >= chunked.MIN_CHUNKED_LOGITS else "xla"
