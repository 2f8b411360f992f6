"""Attention against attributions on a BERT sentence classifier, per sentence.

    explain = explainer(task, steps=16)
    result = explain(params, batch, word_mask_BT)
    tau_B = agreement.kendall_tau(result.rollout_BT, abs(result.attribution_BT), word_mask_BT)

The attention side is the rollout row of [CLS] (position 0, what the classifier reads) over the
input tokens (`rollout`); the gradient side is integrated gradients of the predicted class's
probability over the input embeddings (`attribution`), from a baseline that zeroes the word
embeddings of the sentence's words and keeps [CLS], [SEP] and padding as they are. Jain &
Wallace 2019 compare attention with attribution magnitudes, as here.

B batch, T tokens, D embedding size.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from attention_jax.interpret import attribution, rollout


class Explanation(NamedTuple):
    """One batch's explanations.

    Attributes:
      attention_BT: [CLS]'s last-layer attention over the input tokens, averaged over heads.
      rollout_BT: [CLS]'s attention rollout over the input tokens.
      attribution_BT: integrated gradients of p(predicted class) per token (signed).
      predicted_B: the predicted class.
      gap_B: Σ_t attribution − (F(x) − F(baseline)), the completeness gap.
    """

    attention_BT: np.ndarray
    rollout_BT: np.ndarray
    attribution_BT: np.ndarray
    predicted_B: np.ndarray
    gap_B: np.ndarray


def word_mask(input_ids_BT, input_mask_BT, special_ids) -> np.ndarray:
    """word_mask_BT: real tokens that are not among `special_ids` ([CLS], [SEP])."""
    return np.asarray(input_mask_BT, bool) & ~np.isin(input_ids_BT, list(special_ids))


def trim(features: dict) -> dict:
    """`features` cut to the longest row's real tokens: fewer positions to compute, the same
    outputs (BERT masks padding keys)."""
    T = int(np.asarray(features["input_mask"]).sum(1).max())
    return {k: v[:, :T] if np.ndim(v) == 2 else v for k, v in features.items()}


def explainer(task, *, steps: int = 16, prefix: str = "bert/"):
    """explain(params, batch, word_mask_BT) -> the `Explanation` of `batch` (the model inputs
    of a `bert_finetuning.Classification` task), compiled once per batch shape."""

    @jax.jit
    def explain(params, batch, word_mask_BT):
        layers = rollout.layers(task.attention_weights(params, batch), prefix)
        attention_BT = layers[-1].mean(1)[:, 0]
        rollout_BT = rollout.attention_rollout(layers)[:, 0]
        predicted_B = jnp.argmax(task.apply(params, batch), -1)
        x_BTD, score_fn = attribution.embedding_function(
            task,
            params,
            {**batch, "predicted": predicted_B},
            attribution.class_probability("predicted"),
        )
        baseline_BTD = jnp.where(word_mask_BT[..., None], 0.0, x_BTD)
        attribution_BT = attribution.integrated_gradients(
            score_fn, x_BTD, baseline_BTD, steps=steps
        )
        gap_B = attribution_BT.sum(-1) - (score_fn(x_BTD) - score_fn(baseline_BTD))
        return Explanation(attention_BT, rollout_BT, attribution_BT, predicted_B, gap_B)

    def explain_numpy(params, batch, word_mask_BT):
        return Explanation(*jax.device_get(explain(params, batch, jnp.asarray(word_mask_BT))))

    return explain_numpy


def html_rows(explanation, features, word_mask_ZT, tokenizer, count: int) -> list:
    """`viz.highlight_html` rows of the first `count` sentences: each sentence's words shaded by
    the rollout, then by |integrated gradients| (`features`: "input_ids" and "label")."""
    rows = []
    for i in range(min(count, len(word_mask_ZT))):
        words = word_mask_ZT[i]
        tokens = [tokenizer.id_to_token(t) for t in features["input_ids"][i][words]]
        caption = f"label {features['label'][i]}, predicted {explanation.predicted_B[i]}"
        rows.append((tokens, explanation.rollout_BT[i][words], f"{caption}; rollout"))
        magnitude = np.abs(explanation.attribution_BT[i][words])
        rows.append((tokens, magnitude, f"{caption}; |integrated gradients|"))
    return rows
