"""BERT fine-tuning tasks (Devlin et al. 2019, section 4): classification, SQuAD, tagging.

Each task is the encoder with one output layer (`models.bert`) and its loss; `prepare` turns the
task's files into fixed-size features with `attention_jax.data` and says how to score the model's
outputs on the evaluation set:

    task = create("classification", pretrained.config, num_labels, train_config, overrides)
    data = PREPARE["classification"](config.data, pretrained.tokenizer)
    train_data = task.train_batches(data.train, batch_size, seed, bucket=16)
    metrics = data.score(task.predict(params, data.eval_inputs, batch_size, bucket=16))

Dynamic padding: features are padded to max_seq_length, but classification and tagging batches
are cut to their longest row rounded up to a multiple of `bucket` (0: no cut), so a step pays
for little padding and compiles once per bucket. Training batches group rows of similar lengths
(`batching.FeatureBatches`); evaluation sorts the rows by length. SQuAD windows stay
max_seq_length long (most of them fill it).

B batch, T max_seq_length, L a batch's cut length, C labels, Z rows (examples, features, windows).
"""

import dataclasses
import pathlib
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from attention_jax import evaluation
from attention_jax.data import batching, conll, glue, squad
from attention_jax.models import bert
from attention_jax.tasks.base import Task, with_compute_dtype
from attention_jax.tasks.losses import weighted_cross_entropy

MODEL_INPUTS = ("input_ids", "segment_ids", "input_mask")


class FineTuning(Task):
    """The encoder's inputs; every batch row carries a "weight" (0 for padding rows).

    `cut_padding`: batches may be cut to their longest row (False where every feature fills
    max_seq_length anyway). `per_token`: the outputs have a length axis after the batch axis.
    """

    input_keys = MODEL_INPUTS
    cut_padding: ClassVar[bool] = True
    per_token: ClassVar[bool] = False

    def train_batches(self, features, batch_size: int, seed: int, *, bucket: int) -> Iterator:
        """Shuffled batches forever, resumable (get_state/set_state): rows of similar lengths
        cut to the longest rounded up to `bucket`, or whole features where `bucket` is 0."""
        if bucket and self.cut_padding:
            lengths_Z = features["input_mask"].sum(1)
            return batching.FeatureBatches(features, lengths_Z, batch_size, seed, bucket=bucket)
        return batching.pretraining_batches(batching.ArraySource(features), batch_size, seed)

    def eval_batches(self, features, batch_size: int, *, bucket: int) -> Iterator[dict]:
        """Every row once in batches of `batch_size` (the last one padded with weight-0 rows),
        in order of length and each cut to its longest row rounded up to `bucket` (0: no cut)."""
        order_Z = _length_order(features)
        by_length = {key: value[order_Z] for key, value in features.items()}
        return _cut_batches(by_length, batch_size, bucket if self.cut_padding else 0)

    def predict(self, params, features, batch_size: int, *, bucket: int = 0):
        """The outputs (without dropout) on every row of `features`, in their order, as NumPy
        arrays; per-token outputs of cut batches are padded back to max_seq_length with 0."""
        T = features["input_ids"].shape[1]
        apply = jax.jit(self.apply)

        def pad(output_BL):
            width = [(0, 0), (0, T - output_BL.shape[1])] + [(0, 0)] * (output_BL.ndim - 2)
            return np.pad(output_BL, width) if self.per_token else output_BL

        outputs = [
            jax.tree.map(pad, jax.device_get(apply(params, batch)))
            for batch in self.eval_batches(features, batch_size, bucket=bucket)
        ]
        inverse_Z = np.argsort(_length_order(features))
        return jax.tree.map(lambda *parts: np.concatenate(parts)[inverse_Z], *outputs)


def _length_order(features: dict[str, np.ndarray]) -> np.ndarray:
    return np.argsort(features["input_mask"].sum(1), kind="stable")


def _cut_batches(features, batch_size: int, bucket: int) -> Iterator[dict]:
    """`batching.eval_batches`, each cut to its longest row rounded up to `bucket` (0: no cut)."""
    T = features["input_ids"].shape[1]
    for batch in batching.eval_batches(features, batch_size):
        longest = int(batch["input_mask"].sum(1).max())
        L = min(-(-longest // bucket) * bucket, T) if bucket else T
        yield {key: value[:, :L] if value.ndim > 1 else value for key, value in batch.items()}


class Classification(FineTuning):
    """Mean cross-entropy of the label given the pooled [CLS] output (section 4.1)."""

    def loss(self, params, batch, rng, *, train):
        logits_BC = self.apply(params, batch, rng, train=train)
        weight_B = batch["weight"]
        nll, correct = weighted_cross_entropy(logits_BC, batch["label"], weight_B)
        count = weight_B.sum()
        return nll / jnp.maximum(count, 1.0), {"accuracy": (correct, count)}


class SpanQuestionAnswering(FineTuning):
    """run_squad.py's loss: the mean of the start and end positions' cross-entropies (4.2)."""

    cut_padding = False

    def loss(self, params, batch, rng, *, train):
        start_logits_BT, end_logits_BT = self.apply(params, batch, rng, train=train)
        weight_B = batch["weight"]
        start_nll, start_correct = weighted_cross_entropy(
            start_logits_BT, batch["start_positions"], weight_B
        )
        end_nll, end_correct = weighted_cross_entropy(
            end_logits_BT, batch["end_positions"], weight_B
        )
        count = weight_B.sum()
        metrics = {"start_accuracy": (start_correct, count), "end_accuracy": (end_correct, count)}
        return (start_nll + end_nll) / (2.0 * jnp.maximum(count, 1.0)), metrics


class Tagging(FineTuning):
    """Mean cross-entropy over the labelled tokens, each word's first sub-token (5.3)."""

    per_token = True

    def loss(self, params, batch, rng, *, train):
        logits_BTC = self.apply(params, batch, rng, train=train)
        weight_BT = batch["label_weights"] * batch["weight"][:, None]
        # IGNORE_LABEL (-100) positions have weight 0; any valid class id stands in for them.
        labels_BT = jnp.maximum(batch["label_ids"], 0)
        nll, correct = weighted_cross_entropy(logits_BTC, labels_BT, weight_BT)
        count = weight_BT.sum()
        return nll / jnp.maximum(count, 1.0), {"token_accuracy": (correct, count)}


TASKS = {
    "classification": (Classification, bert.BertForSequenceClassification),
    "squad": (SpanQuestionAnswering, bert.BertForQuestionAnswering),
    "ner": (Tagging, bert.BertForTokenClassification),
}


def create(name: str, encoder_config, num_labels: int, train_config, overrides=()) -> FineTuning:
    """The task `name` over an encoder of `encoder_config`, computing in the training dtype."""
    if name not in TASKS:
        raise ValueError(f"task {name!r} is not one of {tuple(TASKS)}")
    task_class, model_class = TASKS[name]
    model_config = dataclasses.replace(encoder_config, num_labels=num_labels, **dict(overrides))
    return task_class(model_class(with_compute_dtype(model_config, train_config)))


class TaskData(NamedTuple):
    """A task's features and how to score predictions on its evaluation set.

    `train` holds the model inputs, the labels and "weight" (1 per row); `eval_inputs` the same
    keys for the evaluation rows. `score(outputs)` takes the model's outputs on every row of
    `eval_inputs`; `info` describes the data for the results file.
    """

    train: dict[str, np.ndarray]
    eval_inputs: dict[str, np.ndarray]
    num_labels: int
    score: Callable[[Any], dict]
    info: dict


def _with_weight(features: dict[str, np.ndarray], keys) -> dict[str, np.ndarray]:
    rows = len(features["input_ids"])
    return {**{k: features[k] for k in keys}, "weight": np.ones(rows, np.float32)}


def data_file(data_config, field: str, task: str) -> str:
    """`data_config[field]`, which must name an existing file (one-line ValueError if not)."""
    path = data_config[field]
    if path is None:
        raise ValueError(
            f"data.{field} is not set: the {task} task needs --config.data.{field}=PATH"
        )
    if not pathlib.Path(path).is_file():
        raise ValueError(f"data.{field} {path} does not exist")
    return path


def prepare_classification(d, tokenizer) -> TaskData:
    """GLUE-style TSV rows; without `eval_file` a validation set is carved out of train."""
    read = dict(text_columns=d.text_columns, label_column=d.label_column, labels=d.labels)
    texts, labels_Z = glue.read_glue_tsv(data_file(d, "train_file", "classification"), **read)
    if d.eval_file is not None:
        eval_texts, eval_labels_Z = glue.read_glue_tsv(
            data_file(d, "eval_file", "classification"), **read
        )
        info = {"validation": f"{len(eval_texts)} rows of {d.eval_file}"}
    else:
        if d.split == "sentence":
            train_rows, eval_rows, dropped = glue.sentence_split(texts, d.validation_size, d.seed)
            info = {
                "validation": f"{len(eval_rows)} whole sentences held out of {d.train_file}; "
                f"{dropped} training phrases inside them dropped"
            }
        elif d.split == "row":
            rows = {"row": np.arange(len(texts))}
            train_rows, eval_rows = (
                part["row"]
                for part in glue.train_validation_split(
                    rows, validation_size=d.validation_size, seed=d.seed
                )
            )
            info = {"validation": f"{len(eval_rows)} random rows of {d.train_file} (phrase leak)"}
        else:
            raise ValueError(f"data.split must be 'sentence' or 'row', got {d.split!r}")
        eval_texts, eval_labels_Z = [texts[i] for i in eval_rows], labels_Z[eval_rows]
        texts, labels_Z = [texts[i] for i in train_rows], labels_Z[train_rows]

    def features(texts, labels_Z):
        f = glue.classification_features(
            texts, labels_Z, tokenizer, max_seq_length=d.max_seq_length
        )
        return _with_weight(f, (*MODEL_INPUTS, "label"))

    average = "binary" if len(d.labels) == 2 else "macro"

    def score(logits_ZC):
        predictions_Z = np.argmax(logits_ZC, -1)
        return {
            "accuracy": evaluation.classification.accuracy(eval_labels_Z, predictions_Z),
            "f1": evaluation.classification.f1_score(eval_labels_Z, predictions_Z, average=average),
        }

    info["f1"] = f"{average}, positive label {d.labels[1]!r}" if average == "binary" else average
    return TaskData(
        features(texts, labels_Z), features(eval_texts, eval_labels_Z), len(d.labels), score, info
    )


def prepare_squad(d, tokenizer) -> TaskData:
    """SQuAD v1.1 JSON: windows over long contexts; answers are picked over all of them."""
    train_file, eval_file = (data_file(d, field, "squad") for field in ("train_file", "eval_file"))
    windows = dict(
        max_seq_length=d.max_seq_length,
        doc_stride=d.doc_stride,
        max_query_length=d.max_query_length,
    )
    train_examples, eval_examples = squad.read_squad(train_file), squad.read_squad(eval_file)
    keys = (*MODEL_INPUTS, "start_positions", "end_positions")
    train = squad.squad_features(train_examples, tokenizer, is_training=True, **windows)
    eval_features = squad.squad_features(eval_examples, tokenizer, **windows)

    def score(logits):
        start_logits_ZT, end_logits_ZT = logits
        predictions, _ = squad.squad_predictions(
            eval_examples,
            eval_features,
            start_logits_ZT,
            end_logits_ZT,
            n_best_size=d.n_best_size,
            max_answer_length=d.max_answer_length,
        )
        truths = {example.qas_id: example.answer_texts for example in eval_examples}
        return evaluation.squad.evaluate(truths, predictions)

    info = {"eval_questions": len(eval_examples), "eval_windows": len(eval_features["input_ids"])}
    return TaskData(_with_weight(train, keys), _with_weight(eval_features, keys), 2, score, info)


def prepare_ner(d, tokenizer) -> TaskData:
    """CoNLL-format files; the label set is every tag seen in either file."""
    train_file, eval_file = (data_file(d, field, "ner") for field in ("train_file", "eval_file"))
    train_sentences = conll.read_conll(train_file, tag_column=d.tag_column)
    eval_sentences = conll.read_conll(eval_file, tag_column=d.tag_column)
    names = conll.tag_names(train_sentences + eval_sentences)
    keys = (*MODEL_INPUTS, "label_ids", "label_weights")

    def features(sentences):
        return conll.conll_features(sentences, tokenizer, names, max_seq_length=d.max_seq_length)

    eval_features = features(eval_sentences)

    def score(logits_ZTC):
        predicted = conll.word_predictions(np.argmax(logits_ZTC, -1), eval_features, names)
        return evaluation.ner.entity_scores([tags for _, tags in eval_sentences], predicted)

    info = {"eval_sentences": len(eval_sentences), "labels": list(names)}
    return TaskData(
        _with_weight(features(train_sentences), keys),
        _with_weight(eval_features, keys),
        len(names),
        score,
        info,
    )


PREPARE = {"classification": prepare_classification, "squad": prepare_squad, "ner": prepare_ner}
