"""Dense passage retrieval (Karpukhin et al. 2020, "Dense Passage Retrieval for Open-Domain
Question Answering", section 3): a question encoder E_Q and a passage encoder E_P, both BERT,
and the dot product of their outputs as the similarity (equation 1):

    sim(q, p) = E_Q(q)ᵀ E_P(p)

The paper takes the [CLS] token's final hidden state as the representation ("cls" pooling);
sentence-transformers models such as all-MiniLM-L6-v2 average the token states ("mean") and
L2-normalise them (`normalize`), which makes sim the cosine similarity. The two encoders have
their own weights as in the paper, or one set (`shared_encoder`). Each is `bert.BertModel`;
its tanh pooler is not used by either pooling, as in the paper's code.

B questions, Z passages, T question length, S passage length, D hidden size.
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from attention_jax.models import bert

POOLINGS = ("cls", "mean")


@dataclasses.dataclass(frozen=True)
class DualEncoderConfig(bert.BertConfig):
    """`bert.BertConfig` (both encoders have that shape) plus how an encoder's output becomes
    one vector.

    Attributes:
      pooling: "cls" (the [CLS] token's final hidden state, the paper) or "mean" (the mean
        over the real tokens, [CLS] and [SEP] included, as sentence-transformers).
      normalize: L2-normalise the vectors, so that sim is the cosine similarity.
      shared_encoder: one BERT for questions and passages instead of two.
    """

    pooling: str = "cls"
    normalize: bool = False
    shared_encoder: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")


def pool(hidden_BTD, mask_BT, pooling: str, normalize: bool):
    """One vector per sequence from the encoder's hidden states (padding excluded)."""
    if pooling == "cls":
        embedding_BD = hidden_BTD[:, 0]
    else:
        weight_BT = mask_BT.astype(jnp.float32)
        total_BD = jnp.einsum("BTD,BT->BD", hidden_BTD.astype(jnp.float32), weight_BT)
        embedding_BD = total_BD / jnp.maximum(weight_BT.sum(-1, keepdims=True), 1.0)
    if normalize:
        norm_B1 = jnp.linalg.norm(embedding_BD.astype(jnp.float32), axis=-1, keepdims=True)
        embedding_BD = embedding_BD / jnp.maximum(norm_B1, 1e-12)
    return embedding_BD


class DualEncoder(nn.Module):
    """E_Q and E_P. `__call__` encodes questions and passages; `encode_questions` and
    `encode_passages` encode one side (indexing a collection, answering a query)."""

    config: DualEncoderConfig

    def setup(self):
        if self.config.shared_encoder:
            self.encoder = bert.BertModel(self.config)
        else:
            self.question_encoder = bert.BertModel(self.config)
            self.passage_encoder = bert.BertModel(self.config)

    def _encode(self, side, ids_BT, mask_BT, deterministic):
        encoder = self.encoder if self.config.shared_encoder else getattr(self, f"{side}_encoder")
        hidden_BTD, _ = encoder(ids_BT, None, mask_BT, deterministic=deterministic)
        return pool(hidden_BTD, mask_BT, self.config.pooling, self.config.normalize)

    def encode_questions(self, ids_BT, mask_BT, *, deterministic=True):
        """E_Q(q): questions_BD."""
        return self._encode("question", ids_BT, mask_BT, deterministic)

    def encode_passages(self, ids_BS, mask_BS, *, deterministic=True):
        """E_P(p): passages_BD."""
        return self._encode("passage", ids_BS, mask_BS, deterministic)

    def __call__(
        self,
        question_ids_BT,
        question_mask_BT,
        passage_ids_ZS,
        passage_mask_ZS,
        *,
        deterministic=True,
    ):
        """Returns (questions_BD, passages_ZD): Z passages, e.g. B positives and B hard
        negatives."""
        questions_BD = self.encode_questions(
            question_ids_BT, question_mask_BT, deterministic=deterministic
        )
        passages_ZD = self.encode_passages(
            passage_ids_ZS, passage_mask_ZS, deterministic=deterministic
        )
        return questions_BD, passages_ZD


def encoder_names(config: DualEncoderConfig) -> tuple[str, ...]:
    """The parameter collections holding a `BertModel`: where pretrained weights go."""
    if config.shared_encoder:
        return ("encoder",)
    return ("question_encoder", "passage_encoder")
