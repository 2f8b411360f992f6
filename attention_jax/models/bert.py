"""BERT (Devlin et al. 2019): a bidirectional Transformer encoder pre-trained with MLM and NSP.

Section 3: the input is "[CLS] A [SEP] B [SEP]"; a token's input representation is the sum of its
token, segment and position embeddings (figure 2), followed by LayerNorm and dropout. The encoder
is the post-LN Transformer encoder of Vaswani et al. with GELU in the feed-forward layer:

    x = LayerNorm(x + Dropout(MultiHeadAttention(x)))
    x = LayerNorm(x + Dropout(W₂ GELU(W₁ x + b₁) + b₂))

The final hidden state of [CLS] through a tanh layer (the "pooler") represents the sequence.
Pre-training (section 3.1, appendix A.1): the masked LM is predicted only at the masked positions
(at most `max_predictions_per_seq` of them, gathered by `masked_lm_positions`) through
dense + GELU + LayerNorm and a decoder tied to the input word embeddings plus an output bias;
next sentence prediction is a 2-way classifier over the pooled output (label 0: B follows A,
1: B is a random sentence, as in google-research/bert). Fine-tuning (section 4) puts one dense
layer over the pooled output (classification) or over every token (span start/end, tagging).

Parameter names follow the paper's blocks; `attention_jax.interop.hf_bert` maps them to the
Hugging Face / google-research checkpoint names.

B batch, T sequence length, D hidden size, N attention heads, F intermediate size,
V vocabulary size, P masked predictions per sequence, C labels.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from attention_jax.layers import MultiHeadAttention
from attention_jax.models import common
from attention_jax.ops.dot_product import IMPLEMENTATIONS

# "gelu" is the exact erf form, which Hugging Face's BERT uses (and google-research/bert's first
# release did), so imported checkpoints compute what they were converted with; the current
# google-research/bert modeling.py computes the tanh approximation, "gelu_new" here.
ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
}


def _grid_point(name, layers, hidden, heads):
    """A `BertConfig` constructor `(vocab_size, **overrides)` for one published model size."""

    def preset(cls, vocab_size, **overrides):
        shape = dict(
            num_layers=layers, hidden_size=hidden, num_heads=heads, intermediate_size=4 * hidden
        )
        return cls(vocab_size=vocab_size, **{**shape, **overrides})

    preset.__doc__ = (
        f"{name}: {layers} layers, D = {hidden}, N = {heads} heads, F = 4D "
        f"(the paper's L={layers}, H={hidden}, A={heads})."
    )
    return classmethod(preset)


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """BERT hyper-parameters; every field is JSON-friendly (`dataclasses.asdict` round-trips).

    Attributes:
      vocab_size: V, the WordPiece / SentencePiece vocabulary size.
      hidden_size: D (H in the paper).
      num_layers: encoder blocks (L in the paper).
      num_heads: N, attention heads (A in the paper; divides D).
      intermediate_size: F, feed-forward size (4D in the paper).
      max_position_embeddings: longest sequence the learned position table covers.
      type_vocab_size: number of segment ids (2: sentence A and B).
      hidden_dropout_rate: dropout after the embeddings and on every residual branch.
      attention_dropout_rate: dropout on the attention probabilities.
      layer_norm_eps: LayerNorm epsilon (1e-12 as in the released checkpoints).
      initializer_range: standard deviation of the truncated normal weight initialiser.
      hidden_act: feed-forward activation, a key of `ACTIVATIONS`.
      num_labels: C for the fine-tuning classifiers.
      dtype: compute dtype name; softmax and LayerNorm statistics stay in float32.
      param_dtype: parameter storage dtype name.
      remat: recompute each encoder block in the backward pass instead of storing activations.
      attention_implementation: passed to `ops.dot_product_attention` (None picks per platform).
      sow_attention_weights: store each block's weights_BNTS in "intermediates" (forces "xla").
    """

    vocab_size: int
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    hidden_act: str = "gelu"
    num_labels: int = 2
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: bool = False
    attention_implementation: str | None = None
    sow_attention_weights: bool = False

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_heads ({self.num_heads})"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"unknown hidden_act {self.hidden_act!r}; expected one of {list(ACTIVATIONS)}"
            )
        if self.attention_implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"attention_implementation must be one of {IMPLEMENTATIONS}, "
                f"got {self.attention_implementation!r}"
            )
        common.check_dtype_names(self)

    # The google-research/bert model grid (its README: BERT-Tiny ... BERT-Large), F = 4D.
    tiny = _grid_point("BERT-Tiny", layers=2, hidden=128, heads=2)
    mini = _grid_point("BERT-Mini", layers=4, hidden=256, heads=4)
    small = _grid_point("BERT-Small", layers=4, hidden=512, heads=8)
    medium = _grid_point("BERT-Medium", layers=8, hidden=512, heads=8)
    base = _grid_point(
        "BERT-Base (110M parameters with V = 30,522)", layers=12, hidden=768, heads=12
    )
    large = _grid_point("BERT-Large (340M parameters)", layers=24, hidden=1024, heads=16)


def _init(config, axes):
    return nn.with_logical_partitioning(
        nn.initializers.truncated_normal(config.initializer_range), axes
    )


def _dense(config, features, axes, name=None):
    """Dense layer with BERT's initialiser; `axes` name the kernel's (in, out) dimensions."""
    kernel_init = nn.initializers.truncated_normal(config.initializer_range)
    return common.dense(config, features, axes, name, kernel_init=kernel_init)


def _layer_norm(config, name=None):
    # Two-pass variance, as PyTorch computes it: the one-pass E[x²]−E[x]² loses digits.
    return common.layer_norm(config, name, use_fast_variance=False)


class BertEmbeddings(nn.Module):
    """Token + segment + learned position embeddings, then LayerNorm and dropout (figure 2)."""

    config: BertConfig

    def setup(self):
        c = self.config
        dtype, param_dtype = common.dtypes(c)
        embed = functools.partial(
            nn.Embed, features=c.hidden_size, dtype=dtype, param_dtype=param_dtype
        )
        self.word_embeddings = embed(c.vocab_size, embedding_init=_init(c, ("vocab", "embed")))
        self.position_embeddings = embed(
            c.max_position_embeddings, embedding_init=_init(c, (None, "embed"))
        )
        self.token_type_embeddings = embed(
            c.type_vocab_size, embedding_init=_init(c, (None, "embed"))
        )
        self.layer_norm = _layer_norm(c)
        self.dropout = nn.Dropout(c.hidden_dropout_rate)

    def __call__(self, input_ids_BT, segment_ids_BT, *, deterministic=True):
        T = input_ids_BT.shape[1]
        if T > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {T} exceeds max_position_embeddings "
                f"({self.config.max_position_embeddings})"
            )
        x_BTD = (
            self.word_embeddings(input_ids_BT)
            + self.position_embeddings(jnp.arange(T))[None]
            + self.token_type_embeddings(segment_ids_BT)
        )
        return self.dropout(self.layer_norm(x_BTD), deterministic=deterministic)


class BertLayer(nn.Module):
    """One post-LN encoder block: self-attention and a GELU feed-forward layer, each residual."""

    config: BertConfig

    @nn.compact
    def __call__(self, x_BTD, mask_B11T, deterministic=True, head_mask=None):
        c = self.config
        dtype, param_dtype = common.dtypes(c)
        dropout = nn.Dropout(c.hidden_dropout_rate)
        attended_BTD = MultiHeadAttention(
            num_heads=c.num_heads,
            dropout_rate=c.attention_dropout_rate,
            dtype=dtype,
            param_dtype=param_dtype,
            kernel_init=nn.initializers.truncated_normal(c.initializer_range),
            implementation=c.attention_implementation,
            sow_weights=c.sow_attention_weights,
            name="attention",
        )(x_BTD, mask=mask_B11T, deterministic=deterministic, head_mask=head_mask)
        x_BTD = _layer_norm(c, "attention_norm")(
            x_BTD + dropout(attended_BTD, deterministic=deterministic)
        )
        h_BTF = ACTIVATIONS[c.hidden_act](
            _dense(c, c.intermediate_size, ("embed", "mlp"), "intermediate")(x_BTD)
        )
        out_BTD = _dense(c, c.hidden_size, ("mlp", "embed"), "output")(h_BTF)
        return _layer_norm(c, "output_norm")(x_BTD + dropout(out_BTD, deterministic=deterministic))


class BertModel(nn.Module):
    """The encoder: embeddings, L post-LN blocks and the tanh pooler over [CLS].

    Every block's input and the last output are sown as "intermediates"/"hidden_states"
    (L + 1 arrays, as Hugging Face's `output_hidden_states`): `apply(..., mutable="intermediates")`.
    """

    config: BertConfig

    def setup(self):
        c = self.config
        # deterministic (argument 3, counting self) selects Python branches, so it stays static.
        layer = nn.remat(BertLayer, static_argnums=(3,)) if c.remat else BertLayer
        self.embeddings = BertEmbeddings(c)
        self.layers = [layer(c) for _ in range(c.num_layers)]
        # A name may appear once per array, so the square kernel calls its output axis "mlp".
        self.pooler = _dense(c, c.hidden_size, ("embed", "mlp"))

    def __call__(
        self,
        input_ids_BT,
        segment_ids_BT=None,
        input_mask_BT=None,
        *,
        deterministic=True,
        head_mask=None,
    ):
        """Returns (sequence_output_BTD, pooled_output_BD).

        Args:
          input_ids_BT: token ids.
          segment_ids_BT: 0 for sentence A, 1 for sentence B; None means all 0.
          input_mask_BT: 1 (True) for real tokens, 0 for padding; None means no padding. Only keys
            are masked, as in google-research/bert, so padded positions still get (unused) outputs.
          deterministic: disables dropout; False needs a "dropout" rng.
          head_mask: ξ per layer and head, (num_layers, N) or (B, num_layers, N); None = all 1
            (`MultiHeadAttention`).
        """
        if segment_ids_BT is None:
            segment_ids_BT = jnp.zeros_like(input_ids_BT)
        mask_B11T = None if input_mask_BT is None else input_mask_BT.astype(bool)[:, None, None, :]
        x_BTD = common.constrain(
            self.embeddings(input_ids_BT, segment_ids_BT, deterministic=deterministic)
        )
        self.sow("intermediates", "hidden_states", x_BTD)
        head_masks = common.layer_head_masks(head_mask, len(self.layers))
        for layer, layer_mask in zip(self.layers, head_masks, strict=True):
            x_BTD = common.constrain(layer(x_BTD, mask_B11T, deterministic, layer_mask))
            self.sow("intermediates", "hidden_states", x_BTD)
        pooled_BD = jnp.tanh(self.pooler(x_BTD[:, 0]))
        return x_BTD, pooled_BD


def gather_positions(x_BTD, positions_BP):
    """x at the given positions of each sequence: x_BPD[b, p] = x_BTD[b, positions_BP[b, p]]."""
    return jnp.take_along_axis(x_BTD, positions_BP[:, :, None].astype(jnp.int32), axis=1)


class BertForPreTraining(nn.Module):
    """BERT with the pre-training heads of section 3.1: masked LM and next sentence prediction."""

    config: BertConfig

    def setup(self):
        c = self.config
        self.bert = BertModel(c)
        self.mlm_transform = _dense(c, c.hidden_size, ("embed", "mlp"))
        self.mlm_norm = _layer_norm(c)
        self.mlm_output_bias = self.param(
            "mlm_output_bias",
            nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
            (c.vocab_size,),
            jnp.dtype(c.param_dtype),
        )
        self.nsp = _dense(c, 2, ("embed", None))

    def __call__(
        self,
        input_ids_BT,
        segment_ids_BT=None,
        input_mask_BT=None,
        masked_lm_positions_BP=None,
        *,
        deterministic=True,
        head_mask=None,
    ):
        """Returns (mlm_logits_BPV, nsp_logits_B2).

        Args:
          masked_lm_positions_BP: the positions to predict (padded with any valid position, whose
            loss `masked_lm_weights` zeroes); None predicts every position (P = T).
        """
        sequence_BTD, pooled_BD = self.bert(
            input_ids_BT,
            segment_ids_BT,
            input_mask_BT,
            deterministic=deterministic,
            head_mask=head_mask,
        )
        hidden_BPD = sequence_BTD
        if masked_lm_positions_BP is not None:
            hidden_BPD = gather_positions(sequence_BTD, masked_lm_positions_BP)
        hidden_BPD = self.mlm_norm(
            ACTIVATIONS[self.config.hidden_act](self.mlm_transform(hidden_BPD))
        )
        bias_V = self.mlm_output_bias.astype(jnp.dtype(self.config.dtype))
        mlm_logits_BPV = self.bert.embeddings.word_embeddings.attend(hidden_BPD) + bias_V
        return mlm_logits_BPV, self.nsp(pooled_BD)


class _FineTuningModel(nn.Module):
    """The encoder with the output layer of one fine-tuning task (section 4), built by `_head`."""

    config: BertConfig

    @nn.compact
    def __call__(
        self,
        input_ids_BT,
        segment_ids_BT=None,
        input_mask_BT=None,
        *,
        deterministic=True,
        head_mask=None,
    ):
        sequence_BTD, pooled_BD = BertModel(self.config, name="bert")(
            input_ids_BT,
            segment_ids_BT,
            input_mask_BT,
            deterministic=deterministic,
            head_mask=head_mask,
        )
        return self._head(sequence_BTD, pooled_BD, deterministic)

    def _classifier(self, features, deterministic):
        """Dropout, then a Dense layer to the C labels."""
        c = self.config
        features = nn.Dropout(c.hidden_dropout_rate)(features, deterministic=deterministic)
        return _dense(c, c.num_labels, ("embed", None), "classifier")(features)


class BertForSequenceClassification(_FineTuningModel):
    """Sentence (pair) classification from the pooled [CLS] output (section 4.1): logits_BC."""

    def _head(self, sequence_BTD, pooled_BD, deterministic):
        return self._classifier(pooled_BD, deterministic)


class BertForQuestionAnswering(_FineTuningModel):
    """Extractive QA (section 4.2, SQuAD): returns (start_logits_BT, end_logits_BT)."""

    def _head(self, sequence_BTD, pooled_BD, deterministic):
        logits_BT2 = _dense(self.config, 2, ("embed", None), "qa_outputs")(sequence_BTD)
        return logits_BT2[..., 0], logits_BT2[..., 1]


class BertForTokenClassification(_FineTuningModel):
    """Per-token tagging, e.g. named entities (section 5.3): logits_BTC."""

    def _head(self, sequence_BTD, pooled_BD, deterministic):
        return self._classifier(sequence_BTD, deterministic)


def flops_per_example(config, seq_len, num_predictions):
    """Matmul FLOPs of one `BertForPreTraining` training step (forward + backward), per sequence.

    An exact count of the dense products (2·m·n·k each) rather than the 6·N·tokens estimate: the
    attention scores and the MLM head only at `num_predictions` positions are counted as computed.
    The backward pass does two products of the forward one's size for each (input and weight
    gradients), so the total is 3× the forward count. Element-wise work (softmax, GELU, LayerNorm,
    the optimizer) is left out, so an MFU from it is the matmul utilisation.
    """
    D, F, V = config.hidden_size, config.intermediate_size, config.vocab_size
    T, P = seq_len, num_predictions
    # Q, K, V and output projections, two feed-forward matrices, Q·Kᵀ and probs·V.
    per_layer = 2 * T * (4 * D * D + 2 * D * F) + 2 * (2 * T * T * D)
    heads = 2 * D * D + 2 * D * 2 + 2 * P * (D * D + D * V)  # pooler, NSP, MLM transform + decoder
    return 3 * (config.num_layers * per_layer + heads)
