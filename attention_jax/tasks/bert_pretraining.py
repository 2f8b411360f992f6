"""BERT pre-training (Devlin et al. 2019, section 3.1): masked LM + next sentence prediction.

    task = create("tiny", vocab_size, train_config)
    loss, metrics = task.loss(params, batch, rng, train=True)

Batches are google-research/bert's features (`data.bert_pretraining`, `data.tfds_bert`).

B batch, T sequence length, P masked predictions per sequence, V vocabulary size.
"""

import collections

import jax.numpy as jnp
import optax

from attention_jax.models import bert
from attention_jax.tasks.base import Task, with_compute_dtype
from attention_jax.tasks.losses import weighted_cross_entropy


class Pretraining(Task):
    """`BertForPreTraining` on batches of masked examples with their NSP labels."""

    input_keys = ("input_ids", "segment_ids", "input_mask", "masked_lm_positions")

    def loss(self, params, batch, rng, *, train):
        mlm_logits_BPV, nsp_logits_B2 = self.apply(params, batch, rng, train=train)
        return pretraining_loss(mlm_logits_BPV, nsp_logits_B2, batch)


MODEL_SIZES = ("tiny", "mini", "small", "medium", "base", "large")  # BertConfig presets


def check_model_size(model_size: str) -> None:
    """A one-line ValueError unless `model_size` is one of MODEL_SIZES."""
    if model_size not in MODEL_SIZES:
        raise ValueError(f"unknown BERT model size {model_size!r}; expected one of {MODEL_SIZES}")


def create(model_size: str, vocab_size: int, train_config, overrides=()) -> Pretraining:
    """The pre-training task for a `BertConfig` preset ("tiny" ... "large")."""
    check_model_size(model_size)
    model_config = getattr(bert.BertConfig, model_size)(vocab_size, **dict(overrides))
    return Pretraining(bert.BertForPreTraining(with_compute_dtype(model_config, train_config)))


def pretraining_loss(mlm_logits_BPV, nsp_logits_B2, batch):
    """The pre-training objective: mean masked-LM negative log-likelihood + mean NSP one.

    Args:
      batch: google-research/bert features; uses "masked_lm_ids" (B, P), "masked_lm_weights"
        (B, P; 1.0 for real predictions, 0.0 for padding) and "next_sentence_labels" (B or B×1).

    Returns:
      (loss, metrics) with metrics a dict name -> (sum, count) of float32 scalars: "mlm_loss" and
      "mlm_accuracy" over the real masked positions, "nsp_loss" and "nsp_accuracy" over sequences.
    """
    weights_BP = batch["masked_lm_weights"].astype(jnp.float32)
    mlm_sum, mlm_correct = weighted_cross_entropy(
        mlm_logits_BPV, batch["masked_lm_ids"], weights_BP
    )
    mlm_count = weights_BP.sum()

    labels_B = batch["next_sentence_labels"].reshape(-1)
    nsp_logits_B2 = nsp_logits_B2.astype(jnp.float32)
    nsp_sum = optax.softmax_cross_entropy_with_integer_labels(nsp_logits_B2, labels_B).sum()
    nsp_correct = (jnp.argmax(nsp_logits_B2, -1) == labels_B).sum().astype(jnp.float32)
    num_sequences = jnp.float32(labels_B.shape[0])

    loss = mlm_sum / jnp.maximum(mlm_count, 1.0) + nsp_sum / num_sequences
    metrics = {
        "mlm_loss": (mlm_sum, mlm_count),
        "mlm_accuracy": (mlm_correct, mlm_count),
        "nsp_loss": (nsp_sum, num_sequences),
        "nsp_accuracy": (nsp_correct, num_sequences),
    }
    return loss, metrics


def unigram_baseline(train_source, eval_source, max_examples=20_000) -> float:
    """Masked-token accuracy of always predicting the most frequent masked token of train."""

    def counts(source):
        c = collections.Counter()
        for i in range(min(len(source), max_examples)):
            example = source[i]
            c.update(example["masked_lm_ids"][example["masked_lm_weights"] > 0].tolist())
        return c

    most_frequent, _ = counts(train_source).most_common(1)[0]
    eval_counts = counts(eval_source)
    return eval_counts[most_frequent] / sum(eval_counts.values())
