"""GPT: the decoder-only Transformer language model (Radford et al. 2018; Radford et al. 2019).

A stack of Transformer decoder blocks without encoder-decoder attention, trained to predict each
token from the ones before it: P(u) = Π_i P(u_i | u_<i) (GPT-1, section 3.1, eq. 1), with

    h_0 = U W_e + W_p,   h_l = block(h_{l−1}),   P(u) = softmax(h_n W_eᵀ)   (GPT-1, eq. 2)

so the output projection is the token embedding W_e (tied). A block is masked multi-head
self-attention and a GELU feed-forward layer (4D wide), each a residual sub-layer:

- GPT-1 (`pre_ln=False`): post-LN, x = LayerNorm(x + Sublayer(x)), as the Transformer; every
  weight drawn from N(0, 0.02).
- GPT-2 (`pre_ln=True`, section 2.3): LayerNorm moved to the input of each sub-layer, one more
  LayerNorm after the last block, and the weights of the projections that end a residual branch
  scaled by 1/√(2L) at initialisation (N(0, 0.02/√(2L))), L the number of blocks.

Positions: learned W_p (GPT-1/2), the Transformer's fixed sinusoids (added, as there, to
token embeddings multiplied by √D, so that unit-size sinusoids do not drown embeddings drawn
with standard deviation 0.02), or none added to the embeddings with the relative schemes inside
attention, RoPE (Su et al. 2021) or ALiBi (Press et al. 2022); see `ops.positions`.

Packed sequences: several documents share a row of the batch, told apart by segment ids
(1, 2, …; 0 is padding); attention never crosses a document boundary, and positions restart at
each document.

Generation: `GPT.start_decoding` feeds the prompt through the key/value cache and returns a
`step_fn` for `attention_jax.decoding` (or, with `use_cache=False`, one that recomputes the whole
prefix at every step, for comparison).

B batch, T length (of a prompt too), L cache length (prompt and generated tokens), D model dim,
N heads, K key/value heads, F feed-forward dim, V vocabulary size.
"""

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from attention_jax import ops
from attention_jax.layers import MultiHeadAttention
from attention_jax.models.common import (
    check_dtype_names,
    constrain,
    dense,
    dtypes,
    empty_cache,
    layer_head_masks,
    layer_norm,
    residual,
)
from attention_jax.ops.dot_product import IMPLEMENTATIONS

POSITIONS = ("learned", "sinusoidal", "rope", "alibi")


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """GPT hyper-parameters; every field is JSON-friendly (`dataclasses.asdict`).

    Attributes:
      vocab_size: V.
      num_layers: L, decoder blocks.
      d_model: D.
      num_heads: N (divides D).
      num_kv_heads: K, key/value heads for grouped-query attention; None means num_heads.
      d_ff: F, the feed-forward layer's inner size (4D in both papers).
      max_len: the context: the longest sequence, and the size of the learned position table.
      position: "learned", "sinusoidal", "rope" or "alibi" (see the module docstring).
      rope_base: RoPE's frequency base (θ_i = base^(−2i/H)).
      pre_ln: GPT-2's block (pre-LN, a final LayerNorm, 1/√(2L) residual init); False: GPT-1's.
      dropout_rate: on the embeddings and on every residual branch (0.1 in both papers).
      attention_dropout_rate: on the attention probabilities (0.1 in both papers).
      layer_norm_eps: LayerNorm epsilon.
      initializer_range: the standard deviation of every weight's normal initialiser.
      dtype: compute dtype name; softmax and LayerNorm statistics stay in float32.
      param_dtype: parameter storage dtype name.
      attention_implementation: passed to `ops.dot_product_attention` ("chunked" gives long
        contexts in memory linear in the length); None picks per platform.
      sow_attention_weights: store every block's weights_BNTS in "intermediates" (forces "xla").
      remat: recompute each block in the backward pass instead of storing its activations.
    """

    vocab_size: int
    num_layers: int = 12
    d_model: int = 768
    num_heads: int = 12
    num_kv_heads: int | None = None
    d_ff: int = 3072
    max_len: int = 1024
    position: str = "learned"
    rope_base: float = 10000.0
    pre_ln: bool = True
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_implementation: str | None = None
    sow_attention_weights: bool = False
    remat: bool = False

    def __post_init__(self):
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of num_heads")
        if self.num_kv_heads is not None and self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.position == "rope" and (self.d_model // self.num_heads) % 2:
            raise ValueError("rope positions need an even head dim (d_model / num_heads)")
        if self.position == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model, got {self.d_model}")
        if self.attention_implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"attention_implementation must be one of {IMPLEMENTATIONS}, "
                f"got {self.attention_implementation!r}"
            )
        for name in ("num_layers", "max_len", "vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        check_dtype_names(self)

    @classmethod
    def tiny(cls, vocab_size, **overrides):
        """2 blocks, D = 128, 4 heads, context 128: tests and quick CPU runs."""
        return cls._preset(vocab_size, 2, 128, 4, 128, overrides)

    @classmethod
    def small(cls, vocab_size, **overrides):
        """4 blocks, D = 256, 4 heads, context 256: pre-training on a CPU in minutes."""
        return cls._preset(vocab_size, 4, 256, 4, 256, overrides)

    @classmethod
    def gpt1(cls, vocab_size=40478, **overrides):
        """GPT-1 (Radford et al. 2018, section 4.1): 12 post-LN blocks, D = 768, 12 heads,
        F = 3072, 512 tokens of context, a 40,000-merge BPE vocabulary (117M)."""
        shape = dict(pre_ln=False, layer_norm_eps=1e-5)
        return cls._preset(vocab_size, 12, 768, 12, 512, {**shape, **overrides})

    @classmethod
    def gpt2(cls, vocab_size=50257, **overrides):
        """GPT-2 small (Radford et al. 2019, table 2): 12 blocks, D = 768 (124M)."""
        return cls._preset(vocab_size, 12, 768, 12, 1024, overrides)

    @classmethod
    def gpt2_medium(cls, vocab_size=50257, **overrides):
        """GPT-2 medium: 24 blocks, D = 1024, 16 heads (355M)."""
        return cls._preset(vocab_size, 24, 1024, 16, 1024, overrides)

    @classmethod
    def gpt2_large(cls, vocab_size=50257, **overrides):
        """GPT-2 large: 36 blocks, D = 1280, 20 heads (774M)."""
        return cls._preset(vocab_size, 36, 1280, 20, 1024, overrides)

    @classmethod
    def gpt2_xl(cls, vocab_size=50257, **overrides):
        """GPT-2 XL: 48 blocks, D = 1600, 25 heads (1.5B)."""
        return cls._preset(vocab_size, 48, 1600, 25, 1024, overrides)

    @classmethod
    def _preset(cls, vocab_size, layers, d_model, heads, context, overrides):
        shape = dict(
            num_layers=layers, d_model=d_model, num_heads=heads, d_ff=4 * d_model, max_len=context
        )
        return cls(vocab_size=vocab_size, **{**shape, **overrides})


PRESETS = ("tiny", "small", "gpt1", "gpt2", "gpt2_medium", "gpt2_large", "gpt2_xl")


def _init(config, residual_branch=False):
    """N(0, 0.02), and for GPT-2 N(0, 0.02/√(2L)) on the projections that end a residual branch."""
    stddev = config.initializer_range
    if residual_branch and config.pre_ln:
        stddev /= math.sqrt(2 * config.num_layers)
    return nn.initializers.normal(stddev)


class Block(nn.Module):
    """Masked multi-head self-attention, then the GELU feed-forward layer, each residual."""

    config: GPTConfig

    @nn.compact
    def __call__(
        self, x_BTD, masks, positions_BT, deterministic=True, decode=False, head_mask=None
    ):
        """`masks`: the attention's keyword arguments "mask" or "segment_ids" (see GPT)."""
        c = self.config
        dtype, param_dtype = dtypes(c)
        relative = c.position if c.position in ("rope", "alibi") else None

        def attend(h_BTD):
            return MultiHeadAttention(
                num_heads=c.num_heads,
                num_kv_heads=c.num_kv_heads,
                dropout_rate=c.attention_dropout_rate,
                dtype=dtype,
                param_dtype=param_dtype,
                kernel_init=_init(c),
                out_kernel_init=_init(c, residual_branch=True),
                implementation=c.attention_implementation,
                decode=decode,
                sow_weights=c.sow_attention_weights,
                relative_position=relative,
                rope_base=c.rope_base,
                name="attention",
            )(
                h_BTD,
                **masks,
                is_causal=True,
                positions_BT=positions_BT,
                head_mask=head_mask,
                deterministic=deterministic,
            )

        def feed_forward(h_BTD):
            # GELU with the tanh approximation both papers' code uses.
            h_BTF = nn.gelu(dense(c, c.d_ff, ("embed", "mlp"), "fc", kernel_init=_init(c))(h_BTD))
            proj = dense(c, c.d_model, ("mlp", "embed"), "proj", kernel_init=_init(c, True))
            return proj(h_BTF)

        x_BTD = residual(c, "attention", attend, x_BTD, deterministic)
        return residual(c, "mlp", feed_forward, x_BTD, deterministic)


class GPT(nn.Module):
    """The language model: `__call__(tokens_BT, segment_ids_BT, positions_BT)` -> logits_BTV,
    where logits_BTV[:, t] scores the token after tokens_BT[:, t]."""

    config: GPTConfig

    @nn.compact
    def __call__(
        self,
        tokens_BT,
        segment_ids_BT=None,
        positions_BT=None,
        *,
        deterministic=True,
        decode=False,
        head_mask=None,
        return_states=False,
    ):
        """Next-token logits_BTV, and with `return_states` the last block's outputs states_BTD
        (after the final LayerNorm of GPT-2) that the logits are computed from.

        Args:
          segment_ids_BT: packed documents (0 = padding); None: one sequence per row. In decode
            mode they are cached with the keys, so a row may start with padding (prompts of
            different lengths, left-padded) that no later token attends to.
          positions_BT: each token's position in its document; None: 0 … T − 1, or in decode
            mode the cache slots they fill.
          decode: use and update the key/value cache (see `start_decoding`).
          head_mask: ξ per block and head, (num_layers, N) or (B, num_layers, N), multiplying
            each head's output (Michel et al. 2019); None keeps every head.
        """
        c = self.config
        dtype, param_dtype = dtypes(c)
        T = tokens_BT.shape[1]
        if c.position == "learned" and positions_BT is None and not decode and T > c.max_len:
            raise ValueError(f"sequence length {T} exceeds the learned positions ({c.max_len})")
        # Packed rows go to attention as segment ids (which a TPU kernel takes as they are); in
        # decode mode a mask covers the cache's segment ids.
        start, masks = 0, {}
        if decode:
            if segment_ids_BT is None:
                segment_ids_BT = jnp.ones_like(tokens_BT)
            start, segment_ids_BL = self._cache_segments(segment_ids_BT)
            masks["mask"] = ops.segment_mask(segment_ids_BT, segment_ids_BL)[:, None]
        elif segment_ids_BT is not None:
            masks["segment_ids"] = (segment_ids_BT, segment_ids_BT)
        if positions_BT is None:
            positions_BT = start + jnp.arange(T)[None]

        embed = functools.partial(nn.Embed, dtype=dtype, param_dtype=param_dtype)
        init = nn.initializers.normal(c.initializer_range)
        wte = embed(
            c.vocab_size,
            c.d_model,
            embedding_init=nn.with_logical_partitioning(init, ("vocab", "embed")),
            name="wte",
        )
        x_BTD = wte(tokens_BT)
        if c.position == "learned":
            wpe = embed(
                c.max_len,
                c.d_model,
                embedding_init=nn.with_logical_partitioning(init, (None, "embed")),
                name="wpe",
            )
            x_BTD = x_BTD + wpe(positions_BT)
        elif c.position == "sinusoidal":  # scaled as the Transformer's (section 3.4)
            x_BTD = x_BTD * jnp.sqrt(jnp.float32(c.d_model)).astype(x_BTD.dtype)
            pe_TD = ops.sinusoidal_positions(positions_BT.reshape(-1), c.d_model)
            x_BTD = x_BTD + pe_TD.reshape(positions_BT.shape + (c.d_model,)).astype(x_BTD.dtype)
        # Gradients with respect to the input embeddings (attributions, causality tests) come
        # from a "perturbations" collection passed to `apply`; without one this is the identity.
        x_BTD = self.perturb("embeddings", x_BTD)
        x_BTD = nn.Dropout(c.dropout_rate)(x_BTD, deterministic=deterministic)

        # deterministic and decode (arguments 4 and 5, counting self) select Python branches.
        block = nn.remat(Block, static_argnums=(4, 5)) if c.remat else Block
        for i, xi in enumerate(layer_head_masks(head_mask, c.num_layers)):
            x_BTD = constrain(
                block(c, name=f"layers_{i}")(x_BTD, masks, positions_BT, deterministic, decode, xi)
            )
        if c.pre_ln:
            x_BTD = layer_norm(c, "final_norm")(x_BTD)
        logits_BTV = wte.attend(x_BTD)
        logits_BTV = nn.with_logical_constraint(logits_BTV, ("batch", "length", "vocab"))
        return (logits_BTV, x_BTD) if return_states else logits_BTV

    def _cache_segments(self, segment_ids_BT):
        """Writes this chunk's segment ids at the cache index; returns (index, cached ids_BL).

        The first call (during `init`) sizes the cache from the full-length input: L = T.
        """
        initialised = self.has_variable("cache", "index")
        index = self.variable("cache", "index", lambda: jnp.array(0, jnp.int32))
        cached = self.variable("cache", "segment_ids", jnp.zeros_like, segment_ids_BT)
        if not initialised:
            return 0, segment_ids_BT
        i = index.value
        cached.value = jax.lax.dynamic_update_slice(cached.value, segment_ids_BT, (0, i))
        index.value = i + segment_ids_BT.shape[1]
        return i, cached.value

    @nn.nowrap
    def start_decoding(self, params, prompt_BT, max_len, *, prompt_lengths_B=None, use_cache=True):
        """Reads the prompts; returns `(step_fn, state)` for `attention_jax.decoding`.

        Each prompt's last token is the first one the decoder feeds (`bos_id=prompt_BT[:, -1]`),
        so `step_fn(state, tokens_B) -> (logits_BV, state)` scores the token after it; at most
        `max_len` tokens follow. Prompts of different lengths are left-padded: row b's prompt
        is its last `prompt_lengths_B[b]` tokens (None: all T), and its padding is never
        attended to. With `use_cache` the tokens before the last go through the key/value cache
        once; without, every step re-runs the model over the whole prefix (padded to
        T − 1 + max_len), which gives the same logits at O(L) times the cost.
        """
        B, T = prompt_BT.shape
        L = T - 1 + max_len
        lengths_B = jnp.full((B,), T) if prompt_lengths_B is None else prompt_lengths_B
        if self.config.position == "learned" and L > self.config.max_len:
            raise ValueError(
                f"prompt ({T} tokens) + {max_len} new tokens exceed the context "
                f"({self.config.max_len})"
            )
        tokens_BL = jnp.zeros((B, L), jnp.int32).at[:, : T - 1].set(prompt_BT[:, :-1])
        segment_ids_BL, positions_BL = left_padded(lengths_B, T, L)
        state = {"segment_ids": segment_ids_BL, "positions": positions_BL}
        if not use_cache:

            def uncached_step(state, tokens_B):
                i = state["index"]
                tokens_BL = state["tokens"].at[:, i].set(tokens_B)
                logits_BLV = self.apply(
                    {"params": params}, tokens_BL, state["segment_ids"], state["positions"]
                )
                logits_BV = jax.lax.dynamic_index_in_dim(logits_BLV, i, axis=1, keepdims=False)
                return logits_BV, {**state, "tokens": tokens_BL, "index": i + 1}

            return uncached_step, {**state, "tokens": tokens_BL, "index": jnp.array(T - 1)}

        def cached_step(state, tokens_BT):
            i, T = state["cache"]["index"], tokens_BT.shape[1]
            logits_BTV, variables = self.apply(
                {"params": params, "cache": state["cache"]},
                tokens_BT,
                jax.lax.dynamic_slice_in_dim(state["segment_ids"], i, T, axis=1),
                jax.lax.dynamic_slice_in_dim(state["positions"], i, T, axis=1),
                decode=True,
                mutable=["cache"],
            )
            return logits_BTV[:, -1], {**state, "cache": variables["cache"]}

        state["cache"] = empty_cache(self, params, tokens_BL)
        if T > 1:
            _, state = cached_step(state, prompt_BT[:, :-1])
        return (lambda state, tokens_B: cached_step(state, tokens_B[:, None])), state


def left_padded(lengths_B, T: int, L: int):
    """(segment_ids_BL, positions_BL) of rows of L slots whose first T hold left-padded
    prompts of `lengths_B` tokens: segment 0 and position 0 on the padding, then segment 1 and
    positions 0, 1, … from each prompt's first token on."""
    slots_BL = jnp.arange(L)[None] - (T - jnp.asarray(lengths_B))[:, None]
    return (slots_BL >= 0).astype(jnp.int32), jnp.maximum(slots_BL, 0)


def flops_per_token(config: GPTConfig, T: int) -> float:
    """Training FLOPs per token as PaLM's MFU counts them (Chowdhery et al. 2022, appendix B):
    6 per weight of every matmul (forward + backward, a multiply-add being 2), the blocks' and
    the tied output layer's D × V, plus 12 · L · T · D for attention's QKᵀ and AV over T keys."""
    L, D, F, V = config.num_layers, config.d_model, config.d_ff, config.vocab_size
    kv_dim = (config.num_kv_heads or config.num_heads) * (D // config.num_heads)
    weights_per_block = 2 * D * D + 2 * D * kv_dim + 2 * D * F  # query, out, key/value, FFN
    return 6.0 * (L * weights_per_block + D * V) + 12.0 * L * T * D


@dataclasses.dataclass(frozen=True)
class GPTClassifierConfig(GPTConfig):
    """A `GPTConfig` plus the output layer of fine-tuning (GPT-1, section 3.2).

    Attributes:
      num_labels: C, the classes W_y scores.
    """

    num_labels: int = 2

    def __post_init__(self):
        super().__post_init__()
        if self.num_labels < 1:
            raise ValueError(f"num_labels must be positive, got {self.num_labels}")


def segment_ends(segment_ids_BT):
    """True at the last token of each segment of a row (padding, segment 0, never is)."""
    next_BT = jnp.pad(segment_ids_BT[:, 1:], ((0, 0), (0, 1)))
    return (segment_ids_BT > 0) & (segment_ids_BT != next_BT)


class GPTClassifier(nn.Module):
    """GPT-1 supervised fine-tuning (Radford et al. 2018, section 3.2): the language model and
    one linear output layer W_y on the last block's state h_l^m at the input's last token, the
    extract token (section 3.3):

        P(y | x¹ … xᵐ) = softmax(h_l^m W_y)                                   (eq. 3)

    `__call__(tokens_BT, segment_ids_BT, positions_BT)` -> logits_BC; with `return_lm_logits`
    also the language model's next-token logits_BTV on the same input, for the auxiliary
    objective L3 = L2 + λ · L1 (eq. 5, `tasks.gpt_finetuning`).

    Every segment of a row ends with an extract token and their states are added: one segment
    per row is the classification and entailment layout; two are the similarity layout, both
    orders of the two texts, read independently (attention never crosses a segment) and their
    h_l^m added (section 3.3). `pretrained_params` places a pre-trained GPT under "gpt".

    C labels.
    """

    config: GPTClassifierConfig

    @nn.compact
    def __call__(
        self,
        tokens_BT,
        segment_ids_BT=None,
        positions_BT=None,
        *,
        deterministic=True,
        head_mask=None,
        return_lm_logits=False,
    ):
        c = self.config
        if segment_ids_BT is None:
            segment_ids_BT = jnp.ones_like(tokens_BT)
        lm_logits_BTV, states_BTD = GPT(c, name="gpt")(
            tokens_BT,
            segment_ids_BT,
            positions_BT,
            deterministic=deterministic,
            head_mask=head_mask,
            return_states=True,
        )
        extract_BT = segment_ends(segment_ids_BT).astype(states_BTD.dtype)
        h_BD = jnp.einsum("BT,BTD->BD", extract_BT, states_BTD)
        h_BD = nn.Dropout(c.dropout_rate)(h_BD, deterministic=deterministic)  # section 4.1
        logits_BC = dense(c, c.num_labels, ("embed", None), "classifier", kernel_init=_init(c))(
            h_BD
        )
        return (logits_BC, lm_logits_BTV) if return_lm_logits else logits_BC

    @nn.nowrap
    def pretrained_params(self, gpt_params):
        """The part of this model's params that a pre-trained GPT's `gpt_params` (same
        architecture) fill: the "gpt" submodule. `training.train(..., init_params=...)` overlays
        it on the fresh initialisation, so W_y keeps its N(0, 0.02) start."""
        return {"gpt": gpt_params}
