"""The Transformer encoder-decoder of "Attention Is All You Need" (Vaswani et al. 2017).

Section 3.1: a stack of encoder blocks (self-attention, feed-forward) and one of decoder blocks
(masked self-attention, encoder-decoder attention, feed-forward), each sub-layer wrapped as

    post-LN (the paper):  x = LayerNorm(x + Dropout(Sublayer(x)))
    pre-LN  (option):     x = x + Dropout(Sublayer(LayerNorm(x))),  one LayerNorm after the stack

with FFN(x) = max(0, x W₁ + b₁) W₂ + b₂ (eq. 2). Section 3.4: source embeddings, target
embeddings and the pre-softmax projection share one matrix over a joint vocabulary, and the
embeddings are multiplied by √d_model. Section 3.5: fixed sinusoidal positions
PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)).
Section 5.4: residual dropout (label smoothing belongs to the loss, `tasks.losses`).

Token id 0 is padding: encoder keys and cross-attention keys skip it. Targets are right-padded,
so the causal mask alone keeps real decoder positions off padding. The decoder reads
[BOS] y₁ … yₙ and is trained to predict y₁ … yₙ [EOS].

Generation: `Transformer.start_decoding` encodes the source once and returns a `step_fn` for
`attention_jax.decoding` that feeds one token at a time through the decoder self-attention
key/value cache (or, with `use_cache=False`, recomputes the whole prefix, for comparison).
`Transformer.cross_attention_weights` gives the last decoder block's encoder-decoder attention.

B batch, S source length, T target length, D model dim, N attention heads, K key/value heads,
F feed-forward dim, V vocabulary size, L cache length (the longest decode).
"""

import dataclasses
import functools
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from attention_jax.layers import MultiHeadAttention
from attention_jax.models.common import (
    PAD_ID,
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
from attention_jax.ops.positions import sinusoidal_positions


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Transformer hyper-parameters; every field is JSON-friendly (`dataclasses.asdict`).

    Attributes:
      vocab_size: V, the joint source/target vocabulary (id 0 is padding).
      d_model: D.
      num_heads: N, attention heads (h in the paper; divides D).
      num_kv_heads: K, key/value heads for grouped-query attention; None means num_heads.
      d_ff: F, the inner feed-forward size.
      num_encoder_layers: encoder blocks (N in the paper).
      num_decoder_layers: decoder blocks (N in the paper).
      dropout_rate: P_drop, on embeddings + positions and on every sub-layer output.
      attention_dropout_rate: dropout on attention probabilities (0 in the paper).
      max_len: longest source or target sequence the model accepts.
      pre_ln: LayerNorm before each sub-layer (and after each stack) instead of after.
      share_embeddings: one matrix for source, target and output embeddings (section 3.4);
        otherwise separate source and target tables and an output projection.
      layer_norm_eps: LayerNorm epsilon.
      dtype: compute dtype name; softmax and LayerNorm statistics stay in float32.
      param_dtype: parameter storage dtype name.
      attention_implementation: passed to `ops.dot_product_attention` (None picks per platform).
      sow_attention_weights: store every attention's weights_BNTS in "intermediates" (forces
        "xla"); cross-attention is at decoder/layers_i/cross_attention.
      remat: recompute each block in the backward pass instead of storing its activations.
    """

    # Fields of older configs that no longer exist: checkpoint loading drops them.
    RETIRED_FIELDS: ClassVar[tuple[str, ...]] = ("label_smoothing",)

    vocab_size: int
    d_model: int = 512
    num_heads: int = 8
    num_kv_heads: int | None = None
    d_ff: int = 2048
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.0
    max_len: int = 256
    pre_ln: bool = False
    share_embeddings: bool = True
    layer_norm_eps: float = 1e-6
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_implementation: str | None = None
    sow_attention_weights: bool = False
    remat: bool = False

    def __post_init__(self):
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of num_heads")
        if self.d_model % 2:
            raise ValueError(f"d_model ({self.d_model}) must be even for sinusoidal positions")
        if self.num_kv_heads is not None and self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.attention_implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"attention_implementation must be one of {IMPLEMENTATIONS}, "
                f"got {self.attention_implementation!r}"
            )
        check_dtype_names(self)

    # Table 3 of the paper (its N is the number of layers, its h the heads), and two sizes that
    # train on Multi30k (29k pairs) on a CPU.
    @classmethod
    def base(cls, vocab_size, **overrides):
        """Transformer (base): 6 layers, d_model=512, d_ff=2048, h=8, P_drop=0.1 (65M)."""
        return cls._preset(vocab_size, 6, 512, 2048, 8, 0.1, overrides)

    @classmethod
    def big(cls, vocab_size, **overrides):
        """Transformer (big): 6 layers, d_model=1024, d_ff=4096, h=16, P_drop=0.3 (213M)."""
        return cls._preset(vocab_size, 6, 1024, 4096, 16, 0.3, overrides)

    @classmethod
    def small(cls, vocab_size, **overrides):
        """3 layers, d_model=256, d_ff=1024, h=4, P_drop=0.1: Multi30k-sized."""
        return cls._preset(vocab_size, 3, 256, 1024, 4, 0.1, overrides)

    @classmethod
    def tiny(cls, vocab_size, **overrides):
        """2 layers, d_model=128, d_ff=512, h=4, P_drop=0.1: quick CPU runs."""
        return cls._preset(vocab_size, 2, 128, 512, 4, 0.1, overrides)

    @classmethod
    def _preset(cls, vocab_size, layers, d_model, d_ff, heads, dropout, overrides):
        shape = dict(
            num_encoder_layers=layers,
            num_decoder_layers=layers,
            d_model=d_model,
            d_ff=d_ff,
            num_heads=heads,
            dropout_rate=dropout,
        )
        return cls(vocab_size=vocab_size, **{**shape, **overrides})


def _attention(config, name, decode=False):
    dtype, param_dtype = dtypes(config)
    return MultiHeadAttention(
        num_heads=config.num_heads,
        num_kv_heads=config.num_kv_heads,
        dropout_rate=config.attention_dropout_rate,
        dtype=dtype,
        param_dtype=param_dtype,
        implementation=config.attention_implementation,
        decode=decode,
        sow_weights=config.sow_attention_weights,
        name=name,
    )


class FeedForward(nn.Module):
    """FFN(x) = max(0, x W₁ + b₁) W₂ + b₂ (eq. 2), with dropout on the hidden units."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x_BTD, deterministic=True):
        c = self.config
        h_BTF = nn.relu(dense(c, c.d_ff, ("embed", "mlp"), "wi")(x_BTD))
        h_BTF = nn.Dropout(c.dropout_rate)(h_BTF, deterministic=deterministic)
        return dense(c, c.d_model, ("mlp", "embed"), "wo")(h_BTF)


class EncoderLayer(nn.Module):
    """Self-attention over the source, then the feed-forward layer."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x_BSD, mask_B11S, deterministic=True, head_mask=None):
        c = self.config

        def attend(h_BSD):
            return _attention(c, "self_attention")(
                h_BSD, mask=mask_B11S, deterministic=deterministic, head_mask=head_mask
            )

        x_BSD = residual(c, "self_attention", attend, x_BSD, deterministic)
        ffn = functools.partial(FeedForward(c, name="ffn"), deterministic=deterministic)
        return residual(c, "ffn", ffn, x_BSD, deterministic)


class DecoderLayer(nn.Module):
    """Masked self-attention, attention over the encoder output, then the feed-forward layer.

    With `decode=True` the self-attention keys/values live in the "cache" collection, so the
    target can be fed one token at a time.
    """

    config: TransformerConfig

    @nn.compact
    def __call__(
        self,
        y_BTD,
        encoded_BSD,
        mask_B11S,
        deterministic=True,
        decode=False,
        head_mask=None,
        cross_head_mask=None,
    ):
        c = self.config

        def self_attend(h_BTD):
            return _attention(c, "self_attention", decode)(
                h_BTD, is_causal=True, deterministic=deterministic, head_mask=head_mask
            )

        def cross_attend(h_BTD):
            return _attention(c, "cross_attention")(
                h_BTD,
                encoded_BSD,
                mask=mask_B11S,
                deterministic=deterministic,
                head_mask=cross_head_mask,
            )

        y_BTD = residual(c, "self_attention", self_attend, y_BTD, deterministic)
        y_BTD = residual(c, "cross_attention", cross_attend, y_BTD, deterministic)
        ffn = functools.partial(FeedForward(c, name="ffn"), deterministic=deterministic)
        return residual(c, "ffn", ffn, y_BTD, deterministic)


class Embedder(nn.Module):
    """Token embedding × √d_model plus sinusoidal positions, then dropout (sections 3.4, 3.5).

    `attend` is the output projection that shares the matrix (pre-softmax logits).
    """

    config: TransformerConfig

    def setup(self):
        c = self.config
        # Variance 1/D, so the √D-scaled embeddings start at unit variance like the positions.
        init = nn.initializers.normal(stddev=c.d_model**-0.5)
        dtype, param_dtype = dtypes(c)
        self.embedding = nn.Embed(
            c.vocab_size,
            c.d_model,
            dtype=dtype,
            param_dtype=param_dtype,
            embedding_init=nn.with_logical_partitioning(init, ("vocab", "embed")),
        )
        self.dropout = nn.Dropout(c.dropout_rate)

    def __call__(self, ids_BT, positions_T, deterministic=True):
        c = self.config
        x_BTD = self.embedding(ids_BT) * jnp.sqrt(jnp.float32(c.d_model)).astype(c.dtype)
        x_BTD = x_BTD + sinusoidal_positions(positions_T, c.d_model).astype(x_BTD.dtype)
        return self.dropout(x_BTD, deterministic=deterministic)

    def attend(self, y_BTD):
        return self.embedding.attend(y_BTD)


def _check_length(config, T, what):
    if T > config.max_len:
        raise ValueError(f"{what} length {T} exceeds max_len ({config.max_len})")


class Encoder(nn.Module):
    """Embeddings and N encoder blocks: encoded_BSD."""

    config: TransformerConfig
    embedder: Embedder

    @nn.compact
    def __call__(self, src_BS, deterministic=True, head_mask=None):
        c = self.config
        _check_length(c, src_BS.shape[1], "source")
        mask_B11S = (src_BS != PAD_ID)[:, None, None, :]
        layer = nn.remat(EncoderLayer, static_argnums=(3,)) if c.remat else EncoderLayer
        x_BSD = constrain(self.embedder(src_BS, jnp.arange(src_BS.shape[1]), deterministic))
        for i, xi in enumerate(layer_head_masks(head_mask, c.num_encoder_layers)):
            x_BSD = constrain(layer(c, name=f"layers_{i}")(x_BSD, mask_B11S, deterministic, xi))
        return layer_norm(c, "final_norm")(x_BSD) if c.pre_ln else x_BSD


class Decoder(nn.Module):
    """Embeddings, N decoder blocks and the output projection: logits_BTV.

    In decode mode a "cache"/"position" counter gives the tokens their absolute positions.
    """

    config: TransformerConfig
    embedder: Embedder

    @nn.compact
    def __call__(
        self,
        encoded_BSD,
        src_BS,
        tgt_in_BT,
        deterministic=True,
        decode=False,
        head_mask=None,
        cross_head_mask=None,
    ):
        c = self.config
        T = tgt_in_BT.shape[1]
        positions_T = jnp.arange(T)
        if decode:
            initialised = self.has_variable("cache", "position")
            position = self.variable("cache", "position", lambda: jnp.array(0, jnp.int32))
            if initialised:
                positions_T = positions_T + position.value
                position.value = position.value + T
        else:
            _check_length(c, T, "target")
        mask_B11S = (src_BS != PAD_ID)[:, None, None, :]
        # deterministic and decode (arguments 4 and 5, counting self) select Python branches.
        layer = nn.remat(DecoderLayer, static_argnums=(4, 5)) if c.remat else DecoderLayer
        y_BTD = constrain(self.embedder(tgt_in_BT, positions_T, deterministic))
        masks = zip(
            layer_head_masks(head_mask, c.num_decoder_layers),
            layer_head_masks(cross_head_mask, c.num_decoder_layers),
            strict=True,
        )
        for i, (xi, cross_xi) in enumerate(masks):
            y_BTD = constrain(
                layer(c, name=f"layers_{i}")(
                    y_BTD, encoded_BSD, mask_B11S, deterministic, decode, xi, cross_xi
                )
            )
        if c.pre_ln:
            y_BTD = layer_norm(c, "final_norm")(y_BTD)
        if c.share_embeddings:
            logits_BTV = self.embedder.attend(y_BTD)
        else:
            logits_BTV = dense(c, c.vocab_size, ("embed", "vocab"), "logits")(y_BTD)
        return nn.with_logical_constraint(logits_BTV, ("batch", "length", "vocab"))


class Transformer(nn.Module):
    """Encoder-decoder Transformer; `__call__(src_BS, tgt_in_BT)` gives teacher-forced logits."""

    config: TransformerConfig

    def setup(self):
        c = self.config
        if c.share_embeddings:
            self.embed = Embedder(c)
            source = target = self.embed
        else:
            self.source_embed = Embedder(c)
            self.target_embed = Embedder(c)
            source, target = self.source_embed, self.target_embed
        self.encoder = Encoder(c, source)
        self.decoder = Decoder(c, target)

    def encode(self, src_BS, *, deterministic=True, head_mask=None):
        """encoded_BSD for source ids (0 = padding); `head_mask` ξ as in `__call__`."""
        return self.encoder(src_BS, deterministic, head_mask)

    def decode(
        self,
        encoded_BSD,
        src_BS,
        tgt_in_BT,
        *,
        decode=False,
        deterministic=True,
        head_mask=None,
        cross_head_mask=None,
    ):
        """logits_BTV for the decoder inputs `tgt_in_BT` ([BOS] y₁ …).

        Args:
          src_BS: the source ids, for the cross-attention padding mask.
          decode: use and update the self-attention cache (see `init_cache`): `tgt_in_BT` is the
            next chunk of tokens, usually T = 1.
          head_mask, cross_head_mask: ξ of the decoder's self- and cross-attention heads.
        """
        return self.decoder(
            encoded_BSD, src_BS, tgt_in_BT, deterministic, decode, head_mask, cross_head_mask
        )

    def __call__(
        self,
        src_BS,
        tgt_in_BT,
        *,
        deterministic=True,
        encoder_head_mask=None,
        decoder_head_mask=None,
        cross_head_mask=None,
    ):
        """Teacher-forced logits_BTV.

        Args:
          encoder_head_mask, decoder_head_mask, cross_head_mask: ξ, each (layers, N) or
            (B, layers, N), multiplying every head's output in the encoder's self-attention,
            the decoder's self-attention and its cross-attention (Michel et al. 2019); None
            keeps every head.
        """
        encoded_BSD = self.encode(src_BS, deterministic=deterministic, head_mask=encoder_head_mask)
        return self.decode(
            encoded_BSD,
            src_BS,
            tgt_in_BT,
            deterministic=deterministic,
            head_mask=decoder_head_mask,
            cross_head_mask=cross_head_mask,
        )

    @nn.nowrap
    def start_decoding(self, params, src_BS, max_len, *, use_cache=True):
        """Encodes the source once; returns `(step_fn, state)` for `attention_jax.decoding`.

        `step_fn(state, tokens_B) -> (logits_BV, state)` feeds one token per sequence, starting
        with BOS, for at most `max_len` steps. With `use_cache` the step attends over the
        key/value cache; without it the step re-runs the decoder over the whole prefix (padded to
        `max_len`), which gives the same logits at O(max_len) times the cost.
        """
        encoded_BSD = self.apply({"params": params}, src_BS, method=Transformer.encode)
        state = {"encoded": encoded_BSD, "src": src_BS}
        if use_cache:
            state["cache"] = init_cache(self, params, encoded_BSD, src_BS, max_len)
        else:
            state["tokens"] = jnp.zeros((src_BS.shape[0], max_len), jnp.int32)
            state["index"] = jnp.array(0, jnp.int32)

        def cached_step(state, tokens_B):
            logits_B1V, variables = self.apply(
                {"params": params, "cache": state["cache"]},
                state["encoded"],
                state["src"],
                tokens_B[:, None],
                decode=True,
                method=Transformer.decode,
                mutable=["cache"],
            )
            return logits_B1V[:, 0], {**state, "cache": variables["cache"]}

        def uncached_step(state, tokens_B):
            i = state["index"]
            tokens_BL = state["tokens"].at[:, i].set(tokens_B)
            logits_BLV = self.apply(
                {"params": params},
                state["encoded"],
                state["src"],
                tokens_BL,
                method=Transformer.decode,
            )
            logits_BV = jax.lax.dynamic_index_in_dim(logits_BLV, i, axis=1, keepdims=False)
            return logits_BV, {**state, "tokens": tokens_BL, "index": i + 1}

        return (cached_step if use_cache else uncached_step), state

    @nn.nowrap
    def cross_attention_weights(self, params, src_BS, tgt_in_BT):
        """weights_BNTS of the last decoder block's encoder-decoder attention, teacher-forced on
        `tgt_in_BT` ([BOS] y₁ …); each row sums to 1 over the real source tokens."""
        config = dataclasses.replace(self.config, sow_attention_weights=True, remat=False)
        _, variables = Transformer(config).apply(
            {"params": params}, src_BS, tgt_in_BT, mutable=["intermediates"]
        )
        last = variables["intermediates"]["decoder"][f"layers_{config.num_decoder_layers - 1}"]
        return last["cross_attention"]["attention_weights"][0]


def init_cache(model, params, encoded_BSD, src_BS, max_len):
    """An empty decoder cache for up to `max_len` target tokens (shapes only, nothing computed)."""
    tgt_BL = jnp.zeros((src_BS.shape[0], max_len), jnp.int32)
    return empty_cache(model, params, encoded_BSD, src_BS, tgt_BL, method=Transformer.decode)
