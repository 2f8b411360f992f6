"""Memory-efficient attention: the online softmax of FlashAttention over query and key blocks.

Dao et al. 2022 (FlashAttention, Algorithms 1 and 2) in the loop order of Dao 2023
(FlashAttention-2). The T×S logits are never materialised. For each query block Q_i the forward
pass visits the key blocks K_j, V_j keeping a running row max m_i, row sum ℓ_i and unnormalised
output Õ_i:

    S_ij = scale · Q_i K_jᵀ + bias_ij          (−∞ where masked)
    m_i' = max(m_i, rowmax S_ij),   P̃_ij = exp(S_ij − m_i')
    ℓ_i' = e^{m_i − m_i'} ℓ_i + rowsum P̃_ij,   Õ_i' = e^{m_i − m_i'} Õ_i + P̃_ij V_j
    O_i = Õ_i / ℓ_i,   L_i = m_i + log ℓ_i

and saves only O and the log-sum-exp L. The backward pass (a `jax.custom_vjp`) visits the query
blocks for each key block and recomputes P_ij = exp(S_ij − L_i) from L, with
D_i = rowsum(dO_i ∘ O_i):

    dV_j += P_ijᵀ dO_i,   dP_ij = dO_i V_jᵀ,   dS_ij = P_ij ∘ (dP_ij − D_i),
    dQ_i += scale · dS_ij K_j,   dK_j += scale · dS_ijᵀ Q_i,   dbias_ij = dS_ij,

so forward and backward memory grow linearly in T and S. Causal masks are generated per block
from indices and key blocks wholly above the diagonal are never visited. Dropout draws each
block's keep mask from `fold_in(rng, i, j)`, so the backward pass regenerates the same mask.

B batch, T query length, S key length, N query heads, K key/value heads, G = N // K query heads
per key/value head, H head dim; I query blocks of t positions, J key blocks of s keys. A query
block is processed as m = G·t rows per key/value head (its G heads × t positions), so that one
matmul serves all the query heads that share a key/value head.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

# dot_product_attention(implementation=None) picks chunked on CPU/TPU from this many logits
# (T·S) on: on CPU its forward+backward matches xla at T = S = 512 and beats it from 1024
# (benchmarks/results/attention.md), while its memory stays linear.
MIN_CHUNKED_LOGITS = 1024 * 1024
# Tuned with benchmarks/attention.py on CPU: each step is a large matmul, yet the f32 block of
# logits (BLOCK_Q·G × BLOCK_K per key/value head) stays cache-friendly; 512×1024, 128×2048 were
# as fast, 512×512 and 1024×1024 slower.
BLOCK_Q = 256
BLOCK_K = 1024


class _Blocks(NamedTuple):
    """The static description of the blocking (hashable, so custom_vjp can close over it)."""

    T: int
    S: int
    G: int
    t: int  # query positions per block
    s: int  # keys per block
    is_causal: bool
    dropout_rate: float

    # At least one block each, so that an empty sequence still traces (and gives zeros).
    @property
    def num_query_blocks(self):
        return max(1, -(-self.T // self.t))

    @property
    def num_key_blocks(self):
        return max(1, -(-self.S // self.s))


def chunked_attention(
    q_BTNH,
    k_BSKH,
    v_BSKH,
    *,
    mask=None,
    bias=None,
    is_causal=False,
    scale=None,
    dropout_rate=0.0,
    dropout_rng=None,
    block_q=BLOCK_Q,
    block_k=BLOCK_K,
):
    """softmax(scale · Q Kᵀ + bias, mask) V in memory linear in T and S; returns out_BTNH.

    Args:
      mask: boolean, True = attend, a (T, S) array or 4-D broadcastable to (B, N, T, S); it is
        sliced per block in its own shape, so a (B, 1, 1, S) padding mask stays small.
      bias: additive float logits bias shaped like `mask` (differentiable).
      is_causal: query t attends only keys s <= t.
      scale: logits multiplier (differentiable); 1/√H by default.
      dropout_rate: attention-weight dropout with `dropout_rng`; the keep pattern differs from
        the xla implementation's but has the same distribution.
      block_q, block_k: query positions and keys per block; lengths need not be multiples.
    """
    B, T, N, H = q_BTNH.shape
    S, K = k_BSKH.shape[1], k_BSKH.shape[2]
    if k_BSKH.shape != v_BSKH.shape or k_BSKH.shape[0] != B or k_BSKH.shape[3] != H or N % K:
        raise ValueError(f"q {q_BTNH.shape}, k {k_BSKH.shape}, v {v_BSKH.shape} do not match")
    if block_q < 1 or block_k < 1:
        raise ValueError(f"block sizes must be positive, got {block_q}, {block_k}")
    if dropout_rate > 0.0 and dropout_rng is None:
        raise ValueError("dropout_rate > 0 needs a dropout_rng")
    G = N // K
    # Short sequences are one block, not padded up to a full block.
    t, s = max(1, min(block_q, T)), max(1, min(block_k, S))
    blocks = _Blocks(T, S, G, t, s, bool(is_causal), float(dropout_rate))
    I, J = blocks.num_query_blocks, blocks.num_key_blocks

    # Block-major layouts, so that each step is one batched matmul over (B, K).
    q_IBKmH = (
        jnp.pad(q_BTNH, ((0, 0), (0, I * t - T), (0, 0), (0, 0)))
        .reshape(B, I, t, K, G, H)
        .transpose(1, 0, 3, 4, 2, 5)
        .reshape(I, B, K, G * t, H)
    )
    k_JBKsH, v_JBKsH = (
        jnp.pad(x_BSKH, ((0, 0), (0, J * s - S), (0, 0), (0, 0)))
        .reshape(B, J, s, K, H)
        .transpose(1, 0, 3, 2, 4)
        for x_BSKH in (k_BSKH, v_BSKH)
    )
    mask_BKGTS = _blockable("mask", mask, B, N, K, T, S, I * t, J * s)
    bias_BKGTS = _blockable("bias", bias, B, N, K, T, S, I * t, J * s)
    scale = jnp.asarray(H**-0.5 if scale is None else scale, jnp.float32)
    rng = dropout_rng if dropout_rate > 0.0 else None

    out_IBKmH = _flash(blocks, q_IBKmH, k_JBKsH, v_JBKsH, mask_BKGTS, bias_BKGTS, scale, rng)
    out_IBKGtH = out_IBKmH.reshape(I, B, K, G, t, H)
    return out_IBKGtH.transpose(1, 0, 4, 2, 3, 5).reshape(B, I * t, N, H)[:, :T]


def _blockable(name, x, B, N, K, T, S, padded_T, padded_S):
    """A mask or bias broadcastable to (B, N, T, S) as (B|1, K|1, G|1, T|1, S|1), padded to whole
    blocks along T and S where it has them; broadcast dimensions stay 1."""
    if x is None:
        return None
    x_BNTS = x.reshape((1, 1) + x.shape) if x.ndim == 2 else x
    if x_BNTS.ndim != 4 or any(
        d not in (1, full) for d, full in zip(x_BNTS.shape, (B, N, T, S), strict=True)
    ):
        raise ValueError(f"{name} {x.shape} is not (T, S) or broadcastable to {(B, N, T, S)}")
    Bx, Nx, Tx, Sx = x_BNTS.shape
    x_BKGTS = x_BNTS.reshape(Bx, K, N // K, Tx, Sx) if Nx == N else x_BNTS[:, :, None]
    # Padded keys are masked out by index and padded query rows are dropped, so the pad value
    # (False / 0) never reaches an output.
    pads = ((0, 0),) * 3 + (
        (0, padded_T - T if Tx == T else 0),
        (0, padded_S - S if Sx == S else 0),
    )
    return jnp.pad(x_BKGTS, pads)


def _block(x_BKGTS, blocks, i, j):
    """Block (i, j) of a blockable mask or bias as rows × keys (B|1, K|1, m|1, s|1)."""
    if x_BKGTS.shape[3] > 1:
        x_BKGTS = lax.dynamic_slice_in_dim(x_BKGTS, i * blocks.t, blocks.t, axis=3)
    if x_BKGTS.shape[4] > 1:
        x_BKGTS = lax.dynamic_slice_in_dim(x_BKGTS, j * blocks.s, blocks.s, axis=4)
    Bx, Kx, Gx, tx, sx = x_BKGTS.shape
    if Gx == tx == 1:
        return x_BKGTS.reshape(Bx, Kx, 1, sx)
    x_BKGts = jnp.broadcast_to(x_BKGTS, (Bx, Kx, blocks.G, blocks.t, sx))
    return x_BKGts.reshape(Bx, Kx, blocks.G * blocks.t, sx)


def _block_logits(blocks, q_BKmH, k_BKsH, mask_BKGTS, bias_BKGTS, scale, i, j, keys_first):
    """S_ij = scale · Q_i K_jᵀ + bias_ij in float32, −∞ where the mask, causality or key padding
    forbids attending; laid out BKms, or BKsm when `keys_first` (the backward pass, whose
    products Pᵀ dO and dSᵀ Q then read the block in place instead of transposing it)."""

    def oriented(x_BKms):
        return jnp.moveaxis(x_BKms, 3, 2) if keys_first else x_BKms

    if keys_first:
        logits = jnp.einsum("BKsH,BKmH->BKsm", k_BKsH, q_BKmH, preferred_element_type=jnp.float32)
    else:
        logits = jnp.einsum("BKmH,BKsH->BKms", q_BKmH, k_BKsH, preferred_element_type=jnp.float32)
    logits = scale * logits
    if bias_BKGTS is not None:
        logits += oriented(_block(bias_BKGTS, blocks, i, j)).astype(jnp.float32)
    attend_BKms = [] if mask_BKGTS is None else [_block(mask_BKGTS, blocks, i, j)]
    key_s = j * blocks.s + jnp.arange(blocks.s)
    if blocks.is_causal:
        query_m = i * blocks.t + jnp.tile(jnp.arange(blocks.t), blocks.G)
        attend_BKms.append((key_s[None, :] <= query_m[:, None])[None, None])
    if blocks.num_key_blocks * blocks.s > blocks.S:
        attend_BKms.append((key_s < blocks.S)[None, None, None, :])
    for attend in attend_BKms:
        logits = jnp.where(oriented(attend), logits, -jnp.inf)
    return logits


def _dropout_keep(blocks, rng, shape, i, j):
    """Block (i, j)'s keep mask: a function of (rng, i, j) only, so backward redraws it."""
    rng_ij = jax.random.fold_in(jax.random.fold_in(rng, i), j)
    return jax.random.bernoulli(rng_ij, 1.0 - blocks.dropout_rate, shape)


def _key_blocks_for(blocks, i):
    """Key blocks that query block i can see: under causality, none above the diagonal."""
    if not blocks.is_causal:
        return blocks.num_key_blocks
    last_query = (i + 1) * blocks.t - 1
    return jnp.minimum(blocks.num_key_blocks, last_query // blocks.s + 1)


def _first_query_block_for(blocks, j):
    """The first query block that sees key block j: under causality, the one holding t = j·s."""
    return (j * blocks.s) // blocks.t if blocks.is_causal else 0


def _forward(blocks, q_IBKmH, k_JBKsH, v_JBKsH, mask_BKGTS, bias_BKGTS, scale, rng):
    """FlashAttention-2 Algorithm 1: returns out_IBKmH and the log-sum-exp lse_IBKm."""

    def query_block(i_and_q):
        i, q_BKmH = i_and_q

        def key_block(j, carry):
            m_BKm, l_BKm, acc_BKmH = carry
            v_BKsH = v_JBKsH[j]
            logits_BKms = _block_logits(
                blocks, q_BKmH, k_JBKsH[j], mask_BKGTS, bias_BKGTS, scale, i, j, keys_first=False
            )
            m_new_BKm = jnp.maximum(m_BKm, logits_BKms.max(axis=-1))
            # A row masked so far has running max −∞; shifting it by 0 keeps exp(−∞) = 0, not NaN.
            m_safe_BKm = jnp.where(jnp.isneginf(m_new_BKm), 0.0, m_new_BKm)
            p_BKms = jnp.exp(logits_BKms - m_safe_BKm[..., None])
            correction_BKm = jnp.exp(m_BKm - m_safe_BKm)
            l_BKm = correction_BKm * l_BKm + p_BKms.sum(axis=-1)
            if blocks.dropout_rate > 0.0:
                # ℓ normalises the weights before dropout; only the values see the dropped ones.
                keep_BKms = _dropout_keep(blocks, rng, p_BKms.shape, i, j)
                p_BKms = jnp.where(keep_BKms, p_BKms / (1.0 - blocks.dropout_rate), 0.0)
            pv_BKmH = jnp.einsum(
                "BKms,BKsH->BKmH",
                p_BKms.astype(v_BKsH.dtype),
                v_BKsH,
                preferred_element_type=jnp.float32,
            )
            return m_new_BKm, l_BKm, correction_BKm[..., None] * acc_BKmH + pv_BKmH

        row_shape = q_BKmH.shape[:-1]
        init = (
            jnp.full(row_shape, -jnp.inf, jnp.float32),
            jnp.zeros(row_shape, jnp.float32),
            jnp.zeros(q_BKmH.shape, jnp.float32),
        )
        m_BKm, l_BKm, acc_BKmH = lax.fori_loop(0, _key_blocks_for(blocks, i), key_block, init)
        # A fully masked row has ℓ = 0 and Õ = 0: its output is 0 and its L = +∞ makes every
        # recomputed P_ij = exp(S_ij − L) zero in the backward pass.
        masked_BKm = l_BKm == 0.0
        l_safe_BKm = jnp.where(masked_BKm, 1.0, l_BKm)
        out_BKmH = (acc_BKmH / l_safe_BKm[..., None]).astype(v_JBKsH.dtype)
        lse_BKm = jnp.where(masked_BKm, jnp.inf, m_BKm + jnp.log(l_safe_BKm))
        return out_BKmH, lse_BKm

    return lax.map(query_block, (jnp.arange(q_IBKmH.shape[0]), q_IBKmH))


def _backward(blocks, res, dout_IBKmH):
    """FlashAttention-2 Algorithm 2: cotangents of q, k, v, mask, bias, scale and the rng.

    Blocks are laid out keys first (Pᵀ_ij as BKsm), so that dV_j += Pᵀ dO and dK_j += dSᵀ Q
    read them in place; dQ_i is accumulated transposed, as Kᵀ dSᵀ (IBKHm).
    """
    q_IBKmH, k_JBKsH, v_JBKsH, mask_BKGTS, bias_BKGTS, scale, rng, out_IBKmH, lse_IBKm = res
    I, B, K, m, H = q_IBKmH.shape
    delta_IBKm = jnp.einsum(
        "IBKmH,IBKmH->IBKm", dout_IBKmH, out_IBKmH, preferred_element_type=jnp.float32
    )

    def key_block(carry, j_k_v):
        j, k_BKsH, v_BKsH = j_k_v

        def query_block(i, carry):
            dqT_IBKHm, dbias_BKGTS, dk_BKsH, dv_BKsH = carry
            q_BKmH, dout_BKmH = q_IBKmH[i], dout_IBKmH[i]
            logits_BKsm = _block_logits(
                blocks, q_BKmH, k_BKsH, mask_BKGTS, bias_BKGTS, scale, i, j, keys_first=True
            )
            p_BKsm = jnp.exp(logits_BKsm - lse_IBKm[i][:, :, None])
            dp_BKsm = jnp.einsum(
                "BKsH,BKmH->BKsm", v_BKsH, dout_BKmH, preferred_element_type=jnp.float32
            )
            p_dropped_BKsm = p_BKsm
            if blocks.dropout_rate > 0.0:
                keep_BKms = _dropout_keep(blocks, rng, (B, K, m, blocks.s), i, j)
                keep_BKsm = jnp.moveaxis(keep_BKms, 3, 2)
                p_dropped_BKsm = jnp.where(keep_BKsm, p_BKsm / (1.0 - blocks.dropout_rate), 0.0)
                dp_BKsm = jnp.where(keep_BKsm, dp_BKsm / (1.0 - blocks.dropout_rate), 0.0)
            dv_BKsH += jnp.einsum(
                "BKsm,BKmH->BKsH",
                p_dropped_BKsm.astype(dout_BKmH.dtype),
                dout_BKmH,
                preferred_element_type=jnp.float32,
            )
            ds_BKsm = p_BKsm * (dp_BKsm - delta_IBKm[i][:, :, None])
            # dQ and dK are accumulated without the scale, which is applied once at the end.
            dqT_IBKHm = dqT_IBKHm.at[i].add(
                jnp.einsum(
                    "BKsH,BKsm->BKHm",
                    k_BKsH,
                    ds_BKsm.astype(k_BKsH.dtype),
                    preferred_element_type=jnp.float32,
                )
            )
            dk_BKsH += jnp.einsum(
                "BKsm,BKmH->BKsH",
                ds_BKsm.astype(q_BKmH.dtype),
                q_BKmH,
                preferred_element_type=jnp.float32,
            )
            if dbias_BKGTS is not None:
                dbias_BKGTS = _add_block(dbias_BKGTS, ds_BKsm, blocks, i, j)
            return dqT_IBKHm, dbias_BKGTS, dk_BKsH, dv_BKsH

        dqT_IBKHm, dbias_BKGTS = carry
        init = (dqT_IBKHm, dbias_BKGTS, jnp.zeros(k_BKsH.shape, jnp.float32))
        init += (jnp.zeros(v_BKsH.shape, jnp.float32),)
        dqT_IBKHm, dbias_BKGTS, dk_BKsH, dv_BKsH = lax.fori_loop(
            _first_query_block_for(blocks, j), I, query_block, init
        )
        return (dqT_IBKHm, dbias_BKGTS), (dk_BKsH, dv_BKsH)

    dbias_BKGTS = None if bias_BKGTS is None else jnp.zeros(bias_BKGTS.shape, jnp.float32)
    init = (jnp.zeros((I, B, K, H, m), jnp.float32), dbias_BKGTS)
    (dqT_IBKHm, dbias_BKGTS), (dk_JBKsH, dv_JBKsH) = lax.scan(
        key_block, init, (jnp.arange(k_JBKsH.shape[0]), k_JBKsH, v_JBKsH)
    )
    dq_IBKmH = jnp.moveaxis(dqT_IBKHm, 3, 4)
    # S = scale · Q Kᵀ, so ∂S/∂scale = Q Kᵀ and dscale = Σ dS ∘ Q Kᵀ = Σ Q ∘ (dS K).
    dscale = jnp.sum(q_IBKmH.astype(jnp.float32) * dq_IBKmH)
    return (
        (scale * dq_IBKmH).astype(q_IBKmH.dtype),
        (scale * dk_JBKsH).astype(k_JBKsH.dtype),
        dv_JBKsH.astype(v_JBKsH.dtype),
        None,
        None if bias_BKGTS is None else dbias_BKGTS.astype(bias_BKGTS.dtype),
        dscale,
        None,
    )


def _add_block(dbias_BKGTS, ds_BKsm, blocks, i, j):
    """dbias += dS_ij, summed over the dimensions along which the bias is broadcast."""
    B, K, s, _ = ds_BKsm.shape
    ds_BKGts = jnp.moveaxis(ds_BKsm, 2, 3).reshape(B, K, blocks.G, blocks.t, s)
    broadcast = tuple(a for a in range(5) if dbias_BKGTS.shape[a] == 1 < ds_BKGts.shape[a])
    ds_BKGts = ds_BKGts.sum(axis=broadcast, keepdims=True)
    start = (0, 0, 0, i * blocks.t if dbias_BKGTS.shape[3] > 1 else 0)
    start += (j * blocks.s if dbias_BKGTS.shape[4] > 1 else 0,)
    block_BKGts = lax.dynamic_slice(dbias_BKGTS, start, ds_BKGts.shape)
    return lax.dynamic_update_slice(dbias_BKGTS, block_BKGts + ds_BKGts, start)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(blocks, q_IBKmH, k_JBKsH, v_JBKsH, mask_BKGTS, bias_BKGTS, scale, rng):
    args = (q_IBKmH, k_JBKsH, v_JBKsH, mask_BKGTS, bias_BKGTS, scale, rng)
    return _forward(blocks, *args)[0]


def _flash_fwd(blocks, q_IBKmH, k_JBKsH, v_JBKsH, mask_BKGTS, bias_BKGTS, scale, rng):
    args = (q_IBKmH, k_JBKsH, v_JBKsH, mask_BKGTS, bias_BKGTS, scale, rng)
    out_IBKmH, lse_IBKm = _forward(blocks, *args)
    # Residuals: the inputs plus O and L; nothing of size T×S.
    return out_IBKmH, (*args, out_IBKmH, lse_IBKm)


_flash.defvjp(_flash_fwd, _backward)
