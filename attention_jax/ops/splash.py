"""Splash attention: JAX's Pallas TPU kernel for FlashAttention (Dao et al. 2022), the one MaxText
uses, behind our layout and masks.

The kernel (`jax.experimental.pallas.ops.tpu.splash_attention`) runs the online softmax of
`ops/chunked.py` as fused TPU code with its own `custom_vjp`, and skips the key blocks a causal
mask leaves empty. Per example it attends (N, T, H) queries over (K, S, H) keys and values and
masks with a static causal mask and segment ids: query t may attend key s iff
segment_q[t] == segment_k[s]. Our masks map onto it as:

- `is_causal`: the kernel's causal mask, s <= t;
- a key padding mask broadcastable to (B, 1, 1, S): segment 1 for real keys, 0 for padding keys,
  every query in segment 1;
- `segment_ids=(segment_q_BT, segment_k_BS)`: packed rows as in `masks.segment_mask`, id 0
  padding.

Other masks (a (T, S) or a dense (B, N, T, S) mask), bias and dropout are not expressible. A
query with no key to attend gets zeros, as in the other implementations (the kernel alone would
average the values). Its blocks are multiples of the TPU's 128 lanes, so T and S must be too.

B batch, T query length, S key length, N query heads, K key/value heads, H head dim.
"""

import math

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as kernel_masks

LANES = 128
# MaxText's default block size; each block is the largest divisor of its length that divides it.
BLOCK = 512


def unsupported(T, S, mask):
    """Why the kernel cannot compute this attention (a one-line message), or None if it can."""
    if not (T and S) or T % LANES or S % LANES:
        return f"implementation='splash' needs T and S to be multiples of {LANES}, got {T}, {S}"
    if mask is not None and (mask.ndim != 4 or mask.shape[1:3] != (1, 1)):
        return (
            f"implementation='splash' takes a key padding mask (B, 1, 1, S), not {mask.shape}; "
            "pass segment_ids for packed rows"
        )
    return None


def splash_attention(
    q_BTNH,
    k_BSKH,
    v_BSKH,
    *,
    mask=None,
    segment_ids=None,
    is_causal=False,
    scale=None,
    block_q=BLOCK,
    block_k=BLOCK,
    interpret=False,
):
    """softmax(scale · Q Kᵀ) V with the Pallas TPU kernel (see the module docstring).

    Args:
      mask: boolean key padding mask, True = attend, broadcastable to (B, 1, 1, S).
      segment_ids: (segment_q_BT, segment_k_BS) integer ids; id 0 is padding.
      block_q, block_k: upper bounds (multiples of 128) of the kernel's query and key blocks.
      interpret: run the kernel in Pallas's interpreter, e.g. on CPU in tests.

    Returns:
      out_BTNH.
    """
    B, T, N, H = q_BTNH.shape
    S = k_BSKH.shape[1]
    if reason := unsupported(T, S, mask):
        raise ValueError(reason)
    scale = H**-0.5 if scale is None else scale
    segments = None
    if mask is not None or segment_ids is not None:
        segment_q_BT, segment_k_BS = segment_ids or (jnp.ones((B, T)), jnp.ones((B, S)))
        if mask is not None:
            segment_k_BS = jnp.where(jnp.broadcast_to(mask[:, 0, 0], (B, S)), segment_k_BS, 0)
        segments = kernel.SegmentIds(segment_q_BT.astype(jnp.int32), segment_k_BS.astype(jnp.int32))

    bq, bk = math.gcd(T, block_q), math.gcd(S, block_k)
    blocks = kernel.BlockSizes(
        block_q=bq, block_kv=bk, block_q_dkv=bq, block_kv_dkv=bk, block_q_dq=bq, block_kv_dq=bk
    )
    head_mask = kernel_masks.CausalMask((T, S)) if is_causal else kernel_masks.FullMask((T, S))
    splash = kernel.make_splash_mha(
        kernel_masks.MultiHeadMask([head_mask] * N),
        block_sizes=blocks,
        head_shards=1,
        q_seq_shards=1,
        interpret=interpret,
    )
    q_BNTH = (q_BTNH * jnp.asarray(scale, q_BTNH.dtype)).transpose(0, 2, 1, 3)
    k_BKSH, v_BKSH = (x.transpose(0, 2, 1, 3) for x in (k_BSKH, v_BSKH))
    out_BTNH = jax.vmap(splash)(q_BNTH, k_BKSH, v_BKSH, segments).transpose(0, 2, 1, 3)
    if segments is None:  # every query has a key: s = 0 at least
        return out_BTNH
    attends_BT = _has_key(*segments, is_causal)
    return out_BTNH * attends_BT[:, :, None, None].astype(out_BTNH.dtype)


def _has_key(segment_q_BT, segment_k_BS, is_causal):
    """Whether query t may attend any key: one of its segment (not 0), at s <= t if causal.

    Looks up the first key of each query's segment in the stably sorted key ids, so that no
    T×S array is built.
    """
    T, S = segment_q_BT.shape[1], segment_k_BS.shape[1]
    order_BS = jnp.argsort(segment_k_BS, axis=1, stable=True)
    sorted_BS = jnp.take_along_axis(segment_k_BS, order_BS, axis=1)
    first_BT = jnp.minimum(jax.vmap(jnp.searchsorted)(sorted_BS, segment_q_BT), S - 1)
    found_BT = jnp.take_along_axis(sorted_BS, first_BT, axis=1) == segment_q_BT
    found_BT &= segment_q_BT > 0
    if is_causal:
        found_BT &= jnp.take_along_axis(order_BS, first_BT, axis=1) <= jnp.arange(T)
    return found_BT
