"""RNN encoder-decoders with attention: Bahdanau, Cho & Bengio (2015) and Luong, Pham & Manning
(2015).

Encoder: a (bidirectional) LSTM or GRU over the source embeddings; the annotation of token j is
h_j = [→h_j; ←h_j] (Bahdanau section 3.2). The backward direction reads each sequence from its
last real token, so padding never enters a real state.

Decoder, one step i with previous target token y_{i-1} (teacher-forced in training):

- "none": the RNN Encoder-Decoder of Cho et al. (2014) that Bahdanau et al. compare against
  (their RNNencdec): one fixed summary c = [→h_n; ←h_1] of the source is the context of every
  step, otherwise as "bahdanau" below: s_i = RNN(s_{i-1}, [E y_{i-1}; c]) and the deep output.
- "bahdanau" (eqs. 4-6, appendix A.2.2): the previous state asks, e_ij = v_aᵀ tanh(W_a s_{i-1} +
  U_a h_j), α_ij = softmax_j(e_ij), c_i = Σ_j α_ij h_j; s_i = RNN(s_{i-1}, [E y_{i-1}; c_i]); a
  deep output t_i = maxout(U_o s_i + V_o E y_{i-1} + C_o c_i) with pairs, logits = W_o t_i.
  U_a h_j does not depend on i, so it is computed once per source (their footnote in A.1.2).
- "luong_dot" | "luong_general" | "luong_concat" (sections 3.1, 3.3): the current top state
  asks, h_t = RNN(h_{t-1}, [E y_{t-1}; h̃_{t-1}]) with input feeding (or E y_{t-1} alone),
  a_t = align(h_t, h̄_s) with score dot / general / concat (eq. 8), c_t = Σ_s a_ts h̄_s,
  h̃_t = tanh(W_c [c_t; h_t]) (eq. 5), logits = W_s h̃_t (eq. 6). Luong's keys must be the size
  of h_t: "general" projects the annotations when they are not; "dot" requires it. "concat" is
  the additive score with the current state, v_aᵀ tanh(W_a [h_t; h̄_s]) = v_aᵀ tanh(W_q h_t +
  W_k h̄_s), so W_k h̄_s is computed once per source, as Bahdanau's U_a h_j.

The decoder starts from s_0 = tanh(W_s [→h_n; ←h_1]), the final states of both directions of the
top encoder layer projected to each decoder layer's state (one W_s per layer), with zero LSTM
memory cells, for every preset. This departs from both papers, which the presets do not follow
here: Bahdanau et al. (appendix A.2.2) start from s_0 = tanh(W_s ←h_1), the backward encoder's
first state only; Luong et al. start decoder layer ℓ from encoder layer ℓ's final state (h and
c), unprojected.

The encoder is `models.recurrent.rnn_layer` (shared with the SASE BiLSTM): one `lax.scan` per
direction and layer, carrying each LSTM state as a tuple (h, c). The decoder's carry keeps each
layer's state as one array, h and c concatenated, which is also the decoding state that beam
search reorders; each step splits it with `split_state`.

Generation: `Seq2SeqRNN.start_decoding` encodes the source once and returns a `step_fn` for
`attention_jax.decoding` whose state is the decoder carry; `Seq2SeqRNN.cross_attention_weights`
gives the teacher-forced alignments as one head.

B batch, S source length, T target length, d directions, U encoder hidden units per direction,
D decoder hidden size, E annotation size d·U (the attention's values), M embedding size,
A attention hidden size, Q gate pre-activations (4U for an LSTM, 3U for a GRU; 4D, 3D in the
decoder), X carried state (U for a GRU, 2U for an LSTM; D, 2D in the decoder), Y layers, i input
features of a layer (M or E), O the readout size, V vocabulary size, N = 1 attention head.
"""

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from attention_jax.layers import LuongAttention
from attention_jax.models.common import PAD_ID, check_dtype_names, dense, dtypes
from attention_jax.models.recurrent import CELLS, GATES, rnn_cell, rnn_layer, split_state
from attention_jax.models.recurrent import matmul as _matmul
from attention_jax.models.recurrent import param as _param
from attention_jax.ops.additive import additive_scores, attend

ATTENTIONS = ("none", "bahdanau", "luong_dot", "luong_general", "luong_concat")


@dataclasses.dataclass(frozen=True)
class Seq2SeqRNNConfig:
    """RNN encoder-decoder hyper-parameters; every field is JSON-friendly.

    Attributes:
      vocab_size: V, the joint source/target vocabulary (id 0 is padding); source and target
        keep separate embedding tables.
      cell: "lstm" or "gru" (Bahdanau's gated unit, appendix A.1.1).
      attention: "none", "bahdanau", "luong_dot", "luong_general" or "luong_concat".
      embed_size: M, word embedding size.
      encoder_hidden_size: U, per direction.
      decoder_hidden_size: D.
      num_encoder_layers: stacked encoder layers (each bidirectional when `bidirectional`).
      num_decoder_layers: stacked decoder layers; attention reads the top one.
      bidirectional: read the source in both directions.
      attention_hidden_size: A, for "bahdanau" and "luong_concat".
      readout_size: O, maxout units of the deep output of "bahdanau" and "none" (l = 500).
      input_feeding: Luong only: feed h̃_{t-1} into the next step's input (section 3.3).
      dropout_rate: on embeddings, between stacked layers and before the output layer.
      dtype: compute dtype name of the matrix products; gates, states and softmax stay float32.
      param_dtype: parameter storage dtype name.
    """

    # Fields of older configs that no longer exist: checkpoint loading drops them.
    RETIRED_FIELDS: ClassVar[tuple[str, ...]] = ("label_smoothing",)

    vocab_size: int
    cell: str = "lstm"
    attention: str = "bahdanau"
    embed_size: int = 256
    encoder_hidden_size: int = 256
    decoder_hidden_size: int = 512
    num_encoder_layers: int = 1
    num_decoder_layers: int = 1
    bidirectional: bool = True
    attention_hidden_size: int = 256
    readout_size: int = 256
    input_feeding: bool = True
    dropout_rate: float = 0.2
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.attention == "luong_dot" and self.annotation_size != self.decoder_hidden_size:
            raise ValueError(
                f"luong_dot needs annotations ({self.annotation_size}) the size of the decoder "
                f"state ({self.decoder_hidden_size})"
            )
        check_dtype_names(self)

    @property
    def annotation_size(self):
        """E = d·U, the size of an encoder annotation h_j."""
        return self.encoder_hidden_size * (2 if self.bidirectional else 1)

    @classmethod
    def rnnsearch(cls, vocab_size, **overrides):
        """RNNsearch (Bahdanau et al.): GRU, 620-d embeddings, 1000 units, maxout 500.

        The decoder starts from both directions' final states, not from tanh(W_s ←h_1) as in
        the paper (see the module docstring).
        """
        shape = dict(
            cell="gru",
            attention="bahdanau",
            embed_size=620,
            encoder_hidden_size=1000,
            decoder_hidden_size=1000,
            attention_hidden_size=1000,
            readout_size=500,
            dropout_rate=0.0,
        )
        return cls(vocab_size=vocab_size, **{**shape, **overrides})

    @classmethod
    def luong(cls, vocab_size, score="general", **overrides):
        """Luong et al.: 4-layer unidirectional LSTM, 1000 units and embeddings, input feeding.

        Every decoder layer starts from a projection of the top encoder layer's final state, not
        from its own encoder layer's final state as in the paper (see the module docstring).
        """
        shape = dict(
            cell="lstm",
            attention=f"luong_{score}",
            embed_size=1000,
            encoder_hidden_size=1000,
            decoder_hidden_size=1000,
            attention_hidden_size=1000,
            num_encoder_layers=4,
            num_decoder_layers=4,
            bidirectional=False,
            dropout_rate=0.2,
        )
        return cls(vocab_size=vocab_size, **{**shape, **overrides})

    @classmethod
    def small(cls, vocab_size, attention="bahdanau", **overrides):
        """Multi30k-sized: bidirectional LSTM 256 per direction, decoder 512, one layer each."""
        return cls(vocab_size=vocab_size, attention=attention, **overrides)

    @classmethod
    def tiny(cls, vocab_size, attention="bahdanau", **overrides):
        """Quick CPU runs: 64 units per direction and per embedding, decoder 128."""
        shape = dict(
            embed_size=64,
            encoder_hidden_size=64,
            decoder_hidden_size=128,
            attention_hidden_size=64,
            readout_size=64,
        )
        return cls(vocab_size=vocab_size, attention=attention, **{**shape, **overrides})


def _embed(config, name):
    dtype, param_dtype = dtypes(config)
    init = nn.initializers.normal(stddev=config.embed_size**-0.5)
    return nn.Embed(
        config.vocab_size,
        config.embed_size,
        dtype=dtype,
        param_dtype=param_dtype,
        embedding_init=nn.with_logical_partitioning(init, ("vocab", "embed")),
        name=name,
    )


class Encoder(nn.Module):
    """Stacked (bidirectional) RNN: (annotations_BSE, final_BdU of the top layer).

    Annotations at padding positions are zero; the final state of each direction is the one after
    its last real token (→h_n forward, ←h_1 backward).
    """

    config: Seq2SeqRNNConfig

    @nn.compact
    def __call__(self, src_BS, deterministic=True):
        c = self.config
        d, U = (2 if c.bidirectional else 1), c.encoder_hidden_size
        dropout = nn.Dropout(c.dropout_rate)
        valid_BS = src_BS != PAD_ID
        x_BSi = dropout(_embed(c, "embed")(src_BS), deterministic=deterministic)
        for layer in range(c.num_encoder_layers):
            h_BSE, state_BdX = rnn_layer(
                self, c.cell, x_BSi, valid_BS, layer=layer, directions=d, hidden_size=U
            )
            x_BSi = h_BSE
            if layer < c.num_encoder_layers - 1:
                x_BSi = dropout(h_BSE, deterministic=deterministic)
        return x_BSi, state_BdX[..., :U]


class DecoderCell(nn.Module):
    """One decoder step: (carry, y_{i-1}) -> (carry, (logits_BV, weights_BS)).

    The carry is {"rnn": state_BYX} (batch first, as decoding needs) plus {"feed": h̃_BD} with
    Luong input feeding. `memory` holds "annotations" (values, B×S×E), "keys" (B×S×A precomputed
    U_a h_j for Bahdanau and W_k h̄_s for Luong concat, B×S×D otherwise), "mask" (B×S, True for
    real source tokens) and, for "none", the "summary" c (B×E), whose weights are all zero.
    """

    config: Seq2SeqRNNConfig

    @nn.compact
    def __call__(self, carry, token_B, memory, deterministic=True):
        c = self.config
        dtype = dtypes(c)[0]
        D, A = c.decoder_hidden_size, c.attention_hidden_size
        Q = GATES[c.cell] * D
        dropout = nn.Dropout(c.dropout_rate)
        luong = c.attention.startswith("luong")
        state_BYX = carry["rnn"]
        mask_B1S = memory["mask"][:, None, :]
        emb_BM = dropout(_embed(c, "embed")(token_B), deterministic=deterministic)

        def additive_attention(query_BD):
            """vᵀ tanh(W query + keys_s) over the precomputed keys: (context_B1E, weights_B1S)."""
            w_query_DA = _param(
                self, "w_query", (D, A), ("embed", "mlp"), nn.initializers.xavier_uniform()
            )
            v_A = _param(self, "v", (A,), ("mlp",), nn.initializers.normal(A**-0.5))
            query_B1A = _matmul("BD,DA->BA", query_BD, w_query_DA, dtype)[:, None]
            scores_B1S = additive_scores(query_B1A, memory["keys"].astype(jnp.float32), v_A)
            return attend(scores_B1S, memory["annotations"], mask_B1S)

        inputs = [emb_BM]
        if c.attention == "none":
            context_BE, weights_B1S = memory["summary"], jnp.zeros(mask_B1S.shape, jnp.float32)
            inputs.append(context_BE)
        elif c.attention == "bahdanau":
            context_B1E, weights_B1S = additive_attention(state_BYX[:, -1, :D])
            context_BE = context_B1E[:, 0]
            inputs.append(context_BE)
        elif luong and c.input_feeding:
            inputs.append(carry["feed"])

        x_Bi, new_states = jnp.concatenate(inputs, axis=-1), []
        for layer in range(c.num_decoder_layers):
            w_iQ = _param(
                self,
                f"w_x_{layer}",
                (x_Bi.shape[-1], Q),
                ("embed", "mlp"),
                nn.initializers.xavier_uniform(),
            )
            u_DQ = _param(
                self, f"u_{layer}", (D, Q), ("embed", "mlp"), nn.initializers.orthogonal()
            )
            b_Q = _param(self, f"b_{layer}", (Q,), ("mlp",), nn.initializers.zeros)
            xw_BQ = _matmul("Bi,iQ->BQ", x_Bi, w_iQ, dtype) + b_Q.astype(jnp.float32)
            state = split_state(c.cell, state_BYX[:, layer])
            new_states.append(rnn_cell(c.cell, xw_BQ, state, u_DQ, "BD,DQ->BQ", dtype))
            x_Bi = new_states[-1][0]
            if layer < c.num_decoder_layers - 1:
                x_Bi = dropout(x_Bi, deterministic=deterministic)
        h_BD = x_Bi
        carry = {**carry, "rnn": jnp.stack([jnp.concatenate(s, -1) for s in new_states], axis=1)}

        if c.attention == "luong_concat":
            context_B1E, weights_B1S = additive_attention(h_BD)
        elif luong:
            context_B1E, weights_B1S = LuongAttention(
                c.attention.removeprefix("luong_"),
                dtype=dtype,
                param_dtype=dtypes(c)[1],
                name="attention",
            )(h_BD[:, None], memory["keys"], memory["annotations"], mask_B1S)

        if not luong:
            readout_B2O = dense(c, 2 * c.readout_size, ("embed", "mlp"), "readout")(
                jnp.concatenate([h_BD, emb_BM, context_BE], axis=-1)
            )
            out_BO = readout_B2O.reshape(-1, c.readout_size, 2).max(axis=-1)  # maxout, pairs
        else:
            attentional_in = jnp.concatenate([context_B1E[:, 0], h_BD], axis=-1)
            w_c = dense(c, D, ("embed", "mlp"), "w_c", use_bias=False)
            out_BO = jnp.tanh(w_c(attentional_in))
            if c.input_feeding:
                carry["feed"] = out_BO.astype(jnp.float32)
        out_BO = dropout(out_BO, deterministic=deterministic)
        logits_BV = dense(c, c.vocab_size, ("embed", "vocab"), "logits")(out_BO)
        return carry, (logits_BV.astype(jnp.float32), weights_B1S[:, 0])


class Seq2SeqRNN(nn.Module):
    """The encoder-decoder; `__call__(src_BS, tgt_in_BT)` gives teacher-forced logits_BTV."""

    config: Seq2SeqRNNConfig

    def setup(self):
        c = self.config
        D = c.decoder_hidden_size
        self.encoder = Encoder(c)
        self.bridge = dense(c, c.num_decoder_layers * D, ("embed", "mlp"), "bridge")
        if c.attention in ("bahdanau", "luong_concat"):
            self.key_projection = dense(
                c, c.attention_hidden_size, ("embed", "mlp"), "key_projection", use_bias=False
            )
        elif c.attention == "luong_general" and c.annotation_size != D:
            self.key_projection = dense(c, D, ("embed", "mlp"), "key_projection", use_bias=False)
        else:
            self.key_projection = None
        self.cell = DecoderCell(c)

    def encode(self, src_BS, *, deterministic=True):
        """Returns (memory, carry): what every decoder step reads, and the initial state."""
        c = self.config
        annotations_BSE, final_BdU = self.encoder(src_BS, deterministic)
        keys = annotations_BSE
        if self.key_projection is not None:
            keys = self.key_projection(annotations_BSE)
        B, D = src_BS.shape[0], c.decoder_hidden_size
        memory = {"annotations": annotations_BSE, "keys": keys, "mask": src_BS != PAD_ID}
        summary_BE = final_BdU.reshape(B, -1)
        if c.attention == "none":
            memory["summary"] = summary_BE
        s0_BYX = jnp.tanh(self.bridge(summary_BE)).astype(jnp.float32)
        s0_BYX = s0_BYX.reshape(B, c.num_decoder_layers, D)
        if c.cell == "lstm":
            s0_BYX = jnp.concatenate([s0_BYX, jnp.zeros_like(s0_BYX)], axis=-1)
        carry = {"rnn": s0_BYX}
        if c.attention.startswith("luong") and c.input_feeding:
            carry["feed"] = jnp.zeros((B, D), jnp.float32)
        return memory, carry

    def step(self, memory, carry, tokens_B):
        """One decoding step from the previous tokens: (logits_BV, weights_BS, carry)."""
        carry, (logits_BV, weights_BS) = self.cell(carry, tokens_B, memory)
        return logits_BV, weights_BS, carry

    def decode(self, memory, carry, tgt_in_BT, *, deterministic=True):
        """Teacher forcing over `tgt_in_BT` ([BOS] y₁ …): (logits_BTV, weights_BTS, carry)."""

        def body(cell, carry, token_B, memory):
            return cell(carry, token_B, memory, deterministic)

        scan = nn.scan(
            body,
            variable_broadcast="params",
            split_rngs={"params": False, "dropout": True},
            in_axes=(1, nn.broadcast),
            out_axes=1,
        )
        carry, (logits_BTV, weights_BTS) = scan(self.cell, carry, tgt_in_BT, memory)
        return logits_BTV, weights_BTS, carry

    def __call__(self, src_BS, tgt_in_BT, *, deterministic=True, return_weights=False):
        """logits_BTV, or (logits_BTV, weights_BTS) with the source × target alignments."""
        memory, carry = self.encode(src_BS, deterministic=deterministic)
        logits_BTV, weights_BTS, _ = self.decode(
            memory, carry, tgt_in_BT, deterministic=deterministic
        )
        return (logits_BTV, weights_BTS) if return_weights else logits_BTV

    @nn.nowrap
    def start_decoding(self, params, src_BS, max_len):
        """Encodes the source once; returns `(step_fn, state)` for `attention_jax.decoding`.

        `step_fn(state, tokens_B) -> (logits_BV, state)` runs one decoder step from the carry;
        `max_len` is unused (the state does not grow), kept for the Transformer's signature.
        """
        del max_len
        memory, carry = self.apply({"params": params}, src_BS, method=Seq2SeqRNN.encode)

        def step_fn(state, tokens_B):
            logits_BV, _, carry = self.apply(
                {"params": params},
                state["memory"],
                state["carry"],
                tokens_B,
                method=Seq2SeqRNN.step,
            )
            return logits_BV, {**state, "carry": carry}

        return step_fn, {"memory": memory, "carry": carry}

    @nn.nowrap
    def cross_attention_weights(self, params, src_BS, tgt_in_BT):
        """The teacher-forced alignments as one head, weights_BNTS with N = 1: each row sums to 1
        over the real source tokens (all zeros for "none", which has no alignment)."""
        _, weights_BTS = self.apply({"params": params}, src_BS, tgt_in_BT, return_weights=True)
        return weights_BTS[:, None]
