"""GPT-1 supervised fine-tuning (Radford et al. 2018, section 3.2) of a pre-trained GPT.

The classifier (`models.gpt.GPTClassifier`) reads the transformed input (`data.gpt_finetuning`)
and is trained on

    L3(C) = L2(C) + λ · L1(C)                                                  (eq. 5)

L2 the task's cross-entropy, −Σ log P(y | x¹ … xᵐ) (eq. 4), and L1 the language-modelling loss
on the same inputs (eq. 1): every token of a sequence predicted from those before it, the
delimiter and extract tokens included. Both are means here, L2 over examples and L1 over
predicted tokens; λ = 0.5 in the paper, 0 switches the auxiliary objective off.

    lm, gpt_params, tokenizer = language_model.load_run("runs/gpt_small")
    data = prepare(config.data, tokenizer)
    task = create(lm.model.config, data.num_labels, train_config, lm_coef=0.5)
    training.train(train_config, task, train_batches(data.train, 32, seed), ...,
                   init_params=task.model.pretrained_params(gpt_params))
    metrics = data.score(task.predict(params, data.eval_inputs, batch_size))

B batch, T length, V vocabulary size, C labels, Z rows.
"""

import dataclasses

import jax.numpy as jnp
import numpy as np

from attention_jax import evaluation
from attention_jax.data import batching, glue
from attention_jax.data import gpt_finetuning as gpt_data
from attention_jax.models import gpt
from attention_jax.tasks.base import Task, with_compute_dtype
from attention_jax.tasks.bert_finetuning import TaskData, data_file
from attention_jax.tasks.losses import sequence_cross_entropy, weighted_cross_entropy


def next_tokens(tokens_BT, segment_ids_BT):
    """(targets_BT, weights_BT): each token's successor in its segment, and 1 where there is
    one (every real token but the last of its segment)."""
    targets_BT = jnp.pad(tokens_BT[:, 1:], ((0, 0), (0, 1)))
    weights_BT = (segment_ids_BT > 0) & ~gpt.segment_ends(segment_ids_BT)
    return targets_BT, weights_BT


@dataclasses.dataclass(frozen=True)
class GPTFineTuning(Task):
    """L2 + λ · L1 (eq. 5) on rows of `data.gpt_finetuning.features`; "weight" 0 marks padding
    rows.

    Attributes:
      lm_coef: λ, the weight of the auxiliary language-modelling loss (0: none).
    """

    input_keys = gpt_data.FEATURES
    lm_coef: float = 0.5

    def loss(self, params, batch, rng, *, train):
        outputs = self.apply(params, batch, rng, train=train, return_lm_logits=True)
        logits_BC, lm_logits_BTV = outputs
        weight_B = batch["weight"]
        count = weight_B.sum()
        nll, correct = weighted_cross_entropy(logits_BC, batch["label"], weight_B)
        task_loss = nll / jnp.maximum(count, 1.0)
        lm_loss, lm_metrics = sequence_cross_entropy(
            lm_logits_BTV, *next_tokens(batch["inputs"], batch["segment_ids"])
        )
        metrics = {
            "accuracy": (correct, count),
            "task_nll": (nll, count),
            "lm_nll": lm_metrics["nll"],
        }
        return task_loss + self.lm_coef * lm_loss, metrics


def create(
    gpt_config: gpt.GPTConfig, num_labels: int, train_config, *, lm_coef: float = 0.5, overrides=()
) -> GPTFineTuning:
    """The classifier over a GPT of `gpt_config` (a pre-trained run's: same architecture),
    computing in the training dtype; `overrides` set `GPTClassifierConfig` fields (e.g.
    dropout), None keeping one."""
    if not lm_coef >= 0:
        raise ValueError(f"lm_coef (λ) must be non-negative, got {lm_coef}")
    overrides = {k: v for k, v in dict(overrides).items() if v is not None}
    fields = {**dataclasses.asdict(gpt_config), "num_labels": num_labels, **overrides}
    config = with_compute_dtype(gpt.GPTClassifierConfig(**fields), train_config)
    return GPTFineTuning(gpt.GPTClassifier(config), lm_coef=lm_coef)


def train_batches(features, batch_size: int, seed: int) -> batching.FeatureBatches:
    """Shuffled batches of rows of similar lengths, each cut to its longest row."""
    return batching.FeatureBatches(features, gpt_data.lengths(features), batch_size, seed)


def prepare(d, tokenizer) -> TaskData:
    """GLUE-style TSV rows as `data.gpt_finetuning.features`.

    Without `eval_file`, `validation_size` whole sentences are held out of `train_file` by
    `glue.sentence_split` (the phrases inside them leave train); with `tuning`, the same number
    is held out again from what remains, so a recipe can be chosen without ever scoring the
    validation sentences.

    `d` fields: train_file, eval_file, text_columns, label_column, labels, validation_size,
    seed, tuning, max_len, similarity.
    """
    read = dict(text_columns=d.text_columns, label_column=d.label_column, labels=d.labels)
    texts, labels_Z = glue.read_glue_tsv(data_file(d, "train_file", "classification"), **read)
    rows = np.arange(len(texts))
    if d.eval_file is not None:
        eval_texts, eval_labels_Z = glue.read_glue_tsv(
            data_file(d, "eval_file", "classification"), **read
        )
        info = {"validation": f"{len(eval_texts)} rows of {d.eval_file}"}
    else:
        for _ in range(2 if d.tuning else 1):  # the validation split, then the tuning split
            train_rows, eval_rows, dropped = glue.sentence_split(
                [texts[i] for i in rows], d.validation_size, d.seed
            )
            rows, held_out = rows[train_rows], rows[eval_rows]
        info = {
            "validation": f"{len(held_out)} whole sentences held out of {d.train_file}"
            f"{' (tuning: out of the training part)' if d.tuning else ''}; {dropped} training "
            "phrases inside them dropped"
        }
        eval_texts, eval_labels_Z = [texts[i] for i in held_out], labels_Z[held_out]

    def features(texts, labels_Z):
        return gpt_data.features(
            texts, labels_Z, tokenizer, max_len=d.max_len, similarity=d.similarity
        )

    def score(logits_ZC):
        predictions_Z = np.argmax(logits_ZC, -1)
        return {"accuracy": evaluation.classification.accuracy(eval_labels_Z, predictions_Z)}

    train = features([texts[i] for i in rows], labels_Z[rows])
    return TaskData(train, features(eval_texts, eval_labels_Z), len(d.labels), score, info)
