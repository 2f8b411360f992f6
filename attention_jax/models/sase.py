"""Structured self-attentive sentence embedding (Lin et al. 2017, ICLR): the classifier.

Section 2.1: word embeddings w_1 … w_n, a bidirectional LSTM whose annotations are
h_t = [→h_t; ←h_t] (H is n × 2u), then r hops of self-attention over them (eqs. 5-6,
`ops.structured_self_attention`):

    A = softmax(W_s2 tanh(W_s1 Hᵀ))      r × n      M = A H      r × 2u

and a two-layer ReLU MLP over the flattened M gives the class logits. The penalty
P = ‖A Aᵀ − I‖²_F (section 2.2, `ops.attention_penalty`) is the task's business (`tasks.sase`).
Padding is masked everywhere: the backward LSTM starts at each row's last real token, and no
hop attends to padding.

Sentence pairs (section 4.3, SNLI; appendix B): premise and hypothesis go through the same
encoder to M_p and M_h; a gated encoder with one factor matrix per hop combines them,
F_h = batched_dot(M_h, W_fh), F_p = batched_dot(M_p, W_fp), F_r = F_h ⊙ F_p, and the MLP reads
the flattened F_r.

Embeddings are random, or loaded into `params["embed"]["embedding"]` from word vectors or a
pretrained BERT's input embeddings (`tasks.sase`); `freeze_embeddings` stops their gradient.

B batch, S tokens, M embedding size, U LSTM units per direction, E = 2U, A attention hidden
size (d_a), R hops (r), F MLP hidden units, O gated-encoder factors per hop, i the MLP's
input features (R·E, or R·O for pairs), C classes, V vocabulary.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from attention_jax.models.common import PAD_ID, check_dtype_names, dense, dtypes
from attention_jax.models.recurrent import param, rnn_layer
from attention_jax.ops.structured import structured_self_attention


@dataclasses.dataclass(frozen=True)
class SASEConfig:
    """SASE hyper-parameters; every field is JSON-friendly.

    Attributes:
      vocab_size: V (id 0 is padding).
      num_classes: C.
      embed_size: M, word-embedding size (that of the vectors or BERT loaded into it).
      hidden_size: U, LSTM units per direction (the paper's u).
      attention_hidden_size: A, the paper's d_a.
      hops: R, the paper's r.
      mlp_hidden_size: F, hidden units of the two-layer ReLU classifier.
      pair: classify sentence pairs with the gated encoder (SNLI, section 4.3).
      factor_size: O, factors per hop of the gated encoder (pairs only).
      dropout_rate: on the embeddings, the flattened sentence matrix and the MLP hidden layer.
      word_dropout_rate: the probability that a token's whole embedding is zeroed in training
        (word dropout, Iyyer et al. 2015; the survivors are scaled by 1 / (1 − rate)).
      hidden_dropout_rate: on the BiLSTM hidden states H before the attention (the authors' code
        and google/flax's SST-2 example drop them out; the paper does not say).
      freeze_embeddings: no gradient reaches the embedding table.
      dtype: compute dtype name of the matrix products; LSTM states and softmax stay float32.
      param_dtype: parameter storage dtype name.

    Presets (`yelp`, `age`): the reproduction commands of the authors' released code
    (hantek/SelfAttentiveSentEmbed, README): u = 300, d_a = 350, r = 30, an MLP of 3,000 (Yelp)
    or 2,000 (Age) hidden units, 300-d GloVe embeddings (updated in training), dropout 0.3,
    penalty coefficient 1.0 (`tasks.sase`), and in training SGD at 0.001, batches of 50,
    L2 1e-4, LSTM gradients clipped at 0.5. That code drops out the BiLSTM outputs, the
    W_s1 layer, M and the MLP hidden layer; these presets drop out the BiLSTM outputs
    (`hidden_dropout_rate`), the embeddings, M and the MLP hidden layer. Its penalty is the mean
    of the squared entries of AAᵀ − I, i.e. the paper's P / r², so its coefficient 1.0 is
    1 / r² here. `sst2` is sized for SST-2 on a 2-core CPU; `tiny` for tests.
    """

    vocab_size: int
    num_classes: int = 2
    embed_size: int = 300
    hidden_size: int = 150
    attention_hidden_size: int = 128
    hops: int = 4
    mlp_hidden_size: int = 512
    pair: bool = False
    factor_size: int = 64
    dropout_rate: float = 0.5
    word_dropout_rate: float = 0.0
    hidden_dropout_rate: float = 0.0
    freeze_embeddings: bool = False
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        for name in ("vocab_size", "embed_size", "hidden_size", "attention_hidden_size", "hops"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        for name in ("dropout_rate", "word_dropout_rate", "hidden_dropout_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        check_dtype_names(self)

    @classmethod
    def yelp(cls, vocab_size, **overrides):
        """Yelp (section 4.2): u = 300, d_a = 350, r = 30, MLP 3,000, dropout 0.3, 5 classes."""
        shape = dict(
            num_classes=5,
            hidden_size=300,
            attention_hidden_size=350,
            hops=30,
            mlp_hidden_size=3000,
            dropout_rate=0.3,
            hidden_dropout_rate=0.3,
        )
        return cls(vocab_size=vocab_size, **{**shape, **overrides})

    @classmethod
    def age(cls, vocab_size, **overrides):
        """Age (section 4.1): as Yelp but an MLP of 2,000 units."""
        return cls.yelp(vocab_size, **{"mlp_hidden_size": 2000, **overrides})

    @classmethod
    def sst2(cls, vocab_size, **overrides):
        """SST-2 on a 2-core CPU: u = 150, d_a = 128, r = 4, MLP 512, dropout 0.5."""
        return cls(vocab_size=vocab_size, **overrides)

    @classmethod
    def tiny(cls, vocab_size, **overrides):
        """Tests: u = 16, d_a = 16, r = 3, MLP 32."""
        shape = dict(
            embed_size=16,
            hidden_size=16,
            attention_hidden_size=16,
            hops=3,
            mlp_hidden_size=32,
            factor_size=8,
            dropout_rate=0.0,
        )
        return cls(vocab_size=vocab_size, **{**shape, **overrides})


class SentenceEncoder(nn.Module):
    """Tokens → (M_BRE, A_BRS): embeddings, the BiLSTM and r hops of self-attention."""

    config: SASEConfig

    @nn.compact
    def __call__(self, tokens_BS, deterministic=True):
        c = self.config
        dtype, param_dtype = dtypes(c)
        E, A, R = 2 * c.hidden_size, c.attention_hidden_size, c.hops
        embed = nn.Embed(
            c.vocab_size,
            c.embed_size,
            dtype=dtype,
            param_dtype=param_dtype,
            embedding_init=nn.with_logical_partitioning(
                nn.initializers.normal(stddev=c.embed_size**-0.5), ("vocab", "embed")
            ),
            name="embed",
        )
        emb_BSM = embed(tokens_BS)
        if c.freeze_embeddings:
            emb_BSM = jax.lax.stop_gradient(emb_BSM)
        emb_BSM = nn.Dropout(c.word_dropout_rate, broadcast_dims=(2,))(
            emb_BSM, deterministic=deterministic
        )
        emb_BSM = nn.Dropout(c.dropout_rate)(emb_BSM, deterministic=deterministic)
        valid_BS = tokens_BS != PAD_ID
        h_BSE, _ = rnn_layer(
            self, "lstm", emb_BSM, valid_BS, layer=0, directions=2, hidden_size=c.hidden_size
        )
        h_BSE = nn.Dropout(c.hidden_dropout_rate)(h_BSE, deterministic=deterministic)
        w_s1_EA = param(self, "w_s1", (E, A), ("embed", "mlp"), nn.initializers.xavier_uniform())
        w_s2_AR = param(self, "w_s2", (A, R), ("mlp", None), nn.initializers.xavier_uniform())
        return structured_self_attention(
            h_BSE.astype(dtype), w_s1_EA.astype(dtype), w_s2_AR.astype(dtype), valid_BS
        )


class SASE(nn.Module):
    """`__call__(tokens_BS[, tokens_b_BS])` → logits_BC, or with `return_weights` (logits_BC,
    A_BRS), or (logits_BC, (A_BRS, A_b_BRS)) for pairs (A is the premise, b the hypothesis)."""

    config: SASEConfig

    @nn.compact
    def __call__(self, tokens_BS, tokens_b_BS=None, *, deterministic=True, return_weights=False):
        c = self.config
        if c.pair != (tokens_b_BS is not None):
            raise ValueError(f"pair={c.pair} needs {2 if c.pair else 1} token arrays")
        dtype = dtypes(c)[0]
        E, R, O = 2 * c.hidden_size, c.hops, c.factor_size
        dropout = nn.Dropout(c.dropout_rate)
        encoder = SentenceEncoder(c, name="encoder")
        m_BRE, weights_BRS = encoder(tokens_BS, deterministic)
        if c.pair:
            m_b_BRE, weights_b_BRS = encoder(tokens_b_BS, deterministic)
            init = nn.initializers.xavier_uniform(in_axis=1, out_axis=2, batch_axis=(0,))
            w_fp_REO = param(self, "w_fp", (R, E, O), (None, "embed", "mlp"), init)
            w_fh_REO = param(self, "w_fh", (R, E, O), (None, "embed", "mlp"), init)
            f_p_BRO = jnp.einsum("BRE,REO->BRO", m_BRE, w_fp_REO.astype(dtype))
            f_h_BRO = jnp.einsum("BRE,REO->BRO", m_b_BRE, w_fh_REO.astype(dtype))
            flat_Bi = (f_p_BRO * f_h_BRO).reshape(m_BRE.shape[0], R * O)
            weights = (weights_BRS, weights_b_BRS)
        else:
            flat_Bi = m_BRE.reshape(m_BRE.shape[0], R * E)
            weights = weights_BRS
        x_Bi = dropout(flat_Bi, deterministic=deterministic)
        hidden_BF = nn.relu(dense(c, c.mlp_hidden_size, ("embed", "mlp"), "mlp_hidden")(x_Bi))
        hidden_BF = dropout(hidden_BF, deterministic=deterministic)
        logits_BC = dense(c, c.num_classes, ("mlp", None), "logits")(hidden_BF)
        logits_BC = logits_BC.astype(jnp.float32)
        return (logits_BC, weights) if return_weights else logits_BC
