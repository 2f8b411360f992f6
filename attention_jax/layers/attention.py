"""Linen modules that own attention parameters and call the pure functions in `ops`.

Every module can hand back its attention weights: `sow_weights=True` stores them in the
"intermediates" collection under "attention_weights" (run `apply(..., mutable=["intermediates"])`).

B batch, T query length, S key length, D model dim, E value dim, N query heads,
K key/value heads, H head dim, A attention hidden size, R hops, L cache length.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attention_jax import ops

Dtype = Any
default_kernel_init = nn.initializers.xavier_uniform()


def _param(module, name, shape, axes, init=default_kernel_init):
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, module.param_dtype)


class AdditiveAttention(nn.Module):
    """Bahdanau attention with parameters W_q (D×A), W_k (D×A) and v (A)."""

    hidden_size: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    sow_weights: bool = False

    @nn.compact
    def __call__(self, query_BTD, keys_BSD, values_BSE, mask_BTS=None):
        A = self.hidden_size
        w_query_DA = _param(self, "w_query", (query_BTD.shape[-1], A), ("embed", "mlp"))
        w_key_DA = _param(self, "w_key", (keys_BSD.shape[-1], A), ("embed", "mlp"))
        v_A = _param(self, "v", (A,), ("mlp",), nn.initializers.normal(A**-0.5))
        args = nn.dtypes.promote_dtype(
            query_BTD, keys_BSD, values_BSE, w_query_DA, w_key_DA, v_A, dtype=self.dtype
        )
        context_BTE, weights_BTS = ops.additive_attention(*args, mask_BTS=mask_BTS)
        if self.sow_weights:
            self.sow("intermediates", "attention_weights", weights_BTS)
        return context_BTE, weights_BTS


class LuongAttention(nn.Module):
    """Luong attention; `score` is "dot", "general" (W: D×D) or "concat" (W: 2D×A, v: A)."""

    score: str = "dot"
    hidden_size: int | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    sow_weights: bool = False

    @nn.compact
    def __call__(self, query_BTD, keys_BSD, values_BSE, mask_BTS=None):
        D = query_BTD.shape[-1]
        w = v = None
        if self.score == "general":
            # One logical name may appear once per array, so the key side stays replicated.
            w = _param(self, "w", (D, D), ("embed", None))
        elif self.score == "concat":
            A = self.hidden_size or D
            w = _param(self, "w", (2 * D, A), ("embed", "mlp"))
            v = _param(self, "v", (A,), ("mlp",), nn.initializers.normal(A**-0.5))
        query_BTD, keys_BSD, values_BSE, w, v = nn.dtypes.promote_dtype(
            query_BTD, keys_BSD, values_BSE, w, v, dtype=self.dtype
        )
        context_BTE, weights_BTS = ops.luong_attention(
            query_BTD, keys_BSD, values_BSE, score=self.score, w=w, v=v, mask_BTS=mask_BTS
        )
        if self.sow_weights:
            self.sow("intermediates", "attention_weights", weights_BTS)
        return context_BTE, weights_BTS


class StructuredSelfAttention(nn.Module):
    """SASE: R attention hops over the tokens with W_s1 (D×A) and W_s2 (A×R)."""

    hidden_size: int
    num_hops: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    sow_weights: bool = False

    @nn.compact
    def __call__(self, hidden_BSD, mask_BS=None):
        w_s1_DA = _param(self, "w_s1", (hidden_BSD.shape[-1], self.hidden_size), ("embed", "mlp"))
        w_s2_AR = _param(self, "w_s2", (self.hidden_size, self.num_hops), ("mlp", None))
        hidden_BSD, w_s1_DA, w_s2_AR = nn.dtypes.promote_dtype(
            hidden_BSD, w_s1_DA, w_s2_AR, dtype=self.dtype
        )
        embedding_BRD, weights_BRS = ops.structured_self_attention(
            hidden_BSD, w_s1_DA, w_s2_AR, mask_BS
        )
        if self.sow_weights:
            self.sow("intermediates", "attention_weights", weights_BRS)
        return embedding_BRD, weights_BRS


class HeadsDense(nn.Module):
    """A dense layer into or out of heads, `einsum(equation, x, kernel) + bias`.

    The kernel is created in its multi-axis shape (e.g. D×N×H) so each axis carries its own
    logical name for sharding, but initialised as the flat (fan-in × fan-out) matrix it is.
    The bias covers the output axes.
    """

    equation: str
    kernel_shape: tuple[int, ...]
    kernel_axes: tuple[str, ...]
    num_in_dims: int
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    kernel_init: Any = default_kernel_init

    @nn.compact
    def __call__(self, x):
        shape, k = self.kernel_shape, self.num_in_dims
        flat = (math.prod(shape[:k]), math.prod(shape[k:]))

        def init(key, shape, dtype):
            return self.kernel_init(key, flat, dtype).reshape(shape)

        kernel = _param(self, "kernel", shape, self.kernel_axes, init)
        bias = None
        if self.use_bias:
            bias = _param(self, "bias", shape[k:], self.kernel_axes[k:], nn.initializers.zeros)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = jnp.einsum(self.equation, x, kernel)
        return y if bias is None else y + bias


class MultiHeadAttention(nn.Module):
    """Multi-head attention (Vaswani et al. 2017, section 3.2.2) with grouped key/value heads.

    Self-attention when `inputs_kv_BSD` is None, cross-attention otherwise. With `decode=True`
    keys and values are kept in a "cache" collection: initialise with the full-length input,
    then call with one token (or a chunk) at a time; cache slot s holds position s.

    Relative positions act inside self-attention: "rope" rotates queries and keys by their
    positions before the keys are cached (Su et al. 2021); "alibi" adds −m_n |i − j| to the
    logits (Press et al. 2022). See `ops.positions`.

    Attributes:
      num_heads: N, query heads.
      num_kv_heads: K, key/value heads (divides N); None means N.
      head_dim: H; None means D // N.
      out_features: output size; None means the query input size D.
      implementation: passed to `ops.dot_product_attention` (None picks per platform).
      relative_position: None, "rope" or "alibi" (self-attention only).
      rope_base: the base of RoPE's frequencies θ_i = base^(−2i/H).
      out_kernel_init: initialiser of the output projection; None means `kernel_init`.
    """

    RELATIVE_POSITIONS = (None, "rope", "alibi")

    num_heads: int
    num_kv_heads: int | None = None
    head_dim: int | None = None
    out_features: int | None = None
    use_bias: bool = True
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    kernel_init: Any = default_kernel_init
    implementation: str | None = None
    decode: bool = False
    sow_weights: bool = False
    relative_position: str | None = None
    rope_base: float = 10000.0
    out_kernel_init: Any = None

    @nn.compact
    def __call__(
        self,
        inputs_q_BTD,
        inputs_kv_BSD=None,
        *,
        mask=None,
        bias=None,
        is_causal=False,
        segment_ids=None,
        positions_BT=None,
        deterministic=True,
        head_mask=None,
    ):
        """Attend from `inputs_q_BTD` to `inputs_kv_BSD` (default: itself).

        Args:
          mask: boolean, True = attend, (T, S) or broadcastable to (B, N, T, S). In decode mode
            it covers the whole cache: broadcastable to (B, N, T, L).
          is_causal: query t attends keys s <= t; implied in decode mode.
          segment_ids: (segment_q_BT, segment_k_BS), packed sequences (0 = padding), passed to
            `ops.dot_product_attention` (a TPU kernel takes them as they are); not in decode mode.
          positions_BT: the queries' positions for `relative_position`; by default 0 … T − 1,
            the cache slots they fill in decode mode (where ALiBi always uses the slots).
          deterministic: disables attention dropout.
          head_mask: ξ, broadcastable to (B, N): multiplies each head's output before the output
            projection, Σ_h ξ_h Att_h(x) W_O^h (Michel et al. 2019, section 2); None = all 1.

        Returns:
          out_BTD.
        """
        D = inputs_q_BTD.shape[-1]
        N = self.num_heads
        K = self.num_kv_heads or N
        if self.head_dim is None and D % N:
            raise ValueError(f"model dim {D} is not divisible by {N} heads; set head_dim")
        if self.decode and segment_ids is not None:
            raise ValueError("decode mode takes a mask over the cache, not segment_ids")
        if self.decode and inputs_kv_BSD is not None:
            raise ValueError("decode mode caches self-attention keys/values; got inputs_kv_BSD")
        if self.relative_position not in self.RELATIVE_POSITIONS:
            raise ValueError(
                f"relative_position must be one of {self.RELATIVE_POSITIONS}, "
                f"got {self.relative_position!r}"
            )
        if self.relative_position and inputs_kv_BSD is not None:
            raise ValueError(f"{self.relative_position} positions need self-attention")
        H = self.head_dim or D // N
        inputs_kv_BSD = inputs_q_BTD if inputs_kv_BSD is None else inputs_kv_BSD

        def projection(name, heads):
            return HeadsDense(
                "BTD,DNH->BTNH",
                (D, heads, H),
                ("embed", "heads", "kv"),
                num_in_dims=1,
                use_bias=self.use_bias,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                kernel_init=self.kernel_init,
                name=name,
            )

        q_BTNH = projection("query", N)(inputs_q_BTD)
        k_BSKH = projection("key", K)(inputs_kv_BSD)
        v_BSKH = projection("value", K)(inputs_kv_BSD)
        cached = self.decode and self.has_variable("cache", "cache_index")
        start = self.get_variable("cache", "cache_index") if cached else 0
        slots_BT = start + jnp.arange(inputs_q_BTD.shape[1])[None]
        if positions_BT is None:
            positions_BT = slots_BT
        if self.relative_position == "rope":
            q_BTNH = ops.rotary_embedding(q_BTNH, positions_BT, base=self.rope_base)
            k_BSKH = ops.rotary_embedding(k_BSKH, positions_BT, base=self.rope_base)
        if self.decode:
            k_BSKH, v_BSKH, mask = self._update_cache(k_BSKH, v_BSKH, mask)
            is_causal = False  # the cache mask already holds causality
        if self.relative_position == "alibi":
            # Decoding measures distances in cache slots, which stay right when a row starts
            # with padding (its positions are then the slots minus the padding).
            if self.decode:
                alibi_BNTS = ops.alibi_bias(N, slots_BT, jnp.arange(k_BSKH.shape[1])[None])
            else:
                alibi_BNTS = ops.alibi_bias(N, positions_BT, positions_BT)
            bias = alibi_BNTS if bias is None else bias + alibi_BNTS

        dropout_rng = None
        if self.dropout_rate > 0.0 and not deterministic:
            dropout_rng = self.make_rng("dropout")
        result = ops.dot_product_attention(
            q_BTNH,
            k_BSKH,
            v_BSKH,
            mask=mask,
            bias=bias,
            is_causal=is_causal,
            segment_ids=segment_ids,
            dropout_rate=0.0 if deterministic else self.dropout_rate,
            dropout_rng=dropout_rng,
            implementation="xla" if self.sow_weights else self.implementation,
            return_weights=self.sow_weights,
        )
        if self.sow_weights:
            out_BTNH, weights_BNTS = result
            self.sow("intermediates", "attention_weights", weights_BNTS)
        else:
            out_BTNH = result
        if head_mask is not None:
            head_mask = jnp.asarray(head_mask)
            if head_mask.ndim > 2 or head_mask.shape[-1] != N:
                raise ValueError(f"head_mask must broadcast to (B, N={N}), got {head_mask.shape}")
            out_BTNH = out_BTNH * head_mask[..., None, :, None].astype(out_BTNH.dtype)
        return HeadsDense(
            "BTNH,NHD->BTD",
            (N, H, self.out_features or D),
            ("heads", "kv", "embed"),
            num_in_dims=2,
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=self.out_kernel_init or self.kernel_init,
            name="out",
        )(out_BTNH)

    def _update_cache(self, k_BTKH, v_BTKH, mask):
        """Write this chunk's keys/values at the cache index; return the whole cache and mask.

        The first call (during `init`) sizes the cache from the full-length input: L = T.
        """
        initialised = self.has_variable("cache", "cached_key")
        cached_k = self.variable("cache", "cached_key", jnp.zeros, k_BTKH.shape, k_BTKH.dtype)
        cached_v = self.variable("cache", "cached_value", jnp.zeros, v_BTKH.shape, v_BTKH.dtype)
        index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
        if not initialised:
            return k_BTKH, v_BTKH, ops.combine_masks(mask, ops.causal_mask(k_BTKH.shape[1]))
        T, L = k_BTKH.shape[1], cached_k.value.shape[1]
        i = index.value
        zero = jnp.array(0, jnp.int32)
        cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k_BTKH, (zero, i, zero, zero))
        cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v_BTKH, (zero, i, zero, zero))
        index.value = i + T
        # Query t of this chunk sits at position i + t and attends cache slots s <= i + t.
        return cached_k.value, cached_v.value, ops.combine_masks(mask, ops.causal_mask(T, L, i))
