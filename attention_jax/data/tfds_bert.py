"""BERT pretraining data as a local TFDS dataset (array_record files; TensorFlow not needed).

`BertPretraining` is a `tfds.core.GeneratorBasedBuilder` whose `manual_dir` is a corpus folder
(`.txt`/`.txt.gz`, one sentence per line, a blank line between documents). It writes two splits
of fixed-size examples made by `bert_pretraining` (see that module for the features): "train"
with `dupe_factor` passes over most documents, and "eval" with one pass over a held-out
`eval_fraction` of the documents (its random-next segments also come from held-out documents).
Read it with `builder.as_data_source()`, wrapped in `ExampleSource` for fast decoding, and batch
it with `batching.pretraining_batches`; `as_dataset()` would need TensorFlow.

`prepare_pretraining_data` is the one call an experiment makes: it trains the SentencePiece model,
builds the dataset, and reuses both when the same corpus and settings were prepared before.
"""

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import shutil
import uuid

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

from attention_jax.data import bert_pretraining, corpus, tokenizers
from attention_jax.data.bert_pretraining import PretrainingOptions

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class BertPretrainingConfig(tfds.core.BuilderConfig):
    """A builder config; make it with `make_config` so that its name identifies the data.

    Attributes:
      tokenizer_path: a SentencePiece `.model` or a WordPiece `vocab.txt` (see `load_tokenizer`).
      options: how examples are made.
      eval_fraction: fraction of the documents held out for the "eval" split.
      seed: seed of the document split and of example creation.
    """

    tokenizer_path: str = ""
    options: PretrainingOptions = dataclasses.field(default_factory=PretrainingOptions)
    eval_fraction: float = 0.05
    seed: int = 12345


def make_config(
    tokenizer_path, options: PretrainingOptions, *, eval_fraction: float = 0.05, seed: int = 12345
) -> BertPretrainingConfig:
    """A config named after its settings and the tokenizer file's contents."""
    tokenizer_path = pathlib.Path(tokenizer_path)
    if not tokenizer_path.is_file():
        raise ValueError(f"tokenizer file {tokenizer_path} not found")
    digest = hashlib.sha256(tokenizer_path.read_bytes())
    digest.update(json.dumps([dataclasses.asdict(options), eval_fraction, seed]).encode())
    return BertPretrainingConfig(
        name=f"seq{options.max_seq_length}_{digest.hexdigest()[:12]}",
        description=f"{options}, eval_fraction={eval_fraction}, seed={seed}",
        tokenizer_path=str(tokenizer_path),
        options=options,
        eval_fraction=eval_fraction,
        seed=seed,
    )


class BertPretraining(tfds.core.GeneratorBasedBuilder):
    """Masked-LM + next-sentence examples from a local corpus (google-research/bert recipe)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Examples as google-research/bert's create_pretraining_data.py."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Set manual_dir to a folder of UTF-8 .txt or .txt.gz files with one sentence per line "
        "and a blank line between documents (google-research/bert's input format)."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        L = self.builder_config.options.max_seq_length
        P = self.builder_config.options.max_predictions_per_seq

        def tensor(shape, dtype=np.int32):
            # Arrays stored as raw bytes decode with one np.frombuffer (see `ExampleSource`).
            encoding = tfds.features.Encoding.BYTES if shape else tfds.features.Encoding.NONE
            return tfds.features.Tensor(shape=shape, dtype=dtype, encoding=encoding)

        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.splitlines()[0],
            features=tfds.features.FeaturesDict(
                {
                    "input_ids": tensor((L,)),
                    "input_mask": tensor((L,)),
                    "segment_ids": tensor((L,)),
                    "masked_lm_positions": tensor((P,)),
                    "masked_lm_ids": tensor((P,)),
                    "masked_lm_weights": tensor((P,), np.float32),
                    "next_sentence_labels": tensor(()),
                }
            ),
            homepage="https://github.com/google-research/bert",
            # Examples keep their creation order; readers shuffle globally (`batching`).
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config
        tokenizer = tokenizers.load_tokenizer(config.tokenizer_path)
        files = corpus.list_corpus_files(dl_manager.manual_dir)
        documents = bert_pretraining.tokenize_documents(corpus.read_documents(files), tokenizer)
        train, eval_ = bert_pretraining.split_documents(
            documents, config.eval_fraction, config.seed
        )
        eval_options = dataclasses.replace(config.options, dupe_factor=1)
        return {
            "train": self._generate_examples(train, tokenizer, config.options, config.seed),
            "eval": self._generate_examples(eval_, tokenizer, eval_options, config.seed + 1),
        }

    def _generate_examples(self, documents, tokenizer, options, seed):
        features = bert_pretraining.create_pretraining_features(documents, tokenizer, options, seed)
        yield from enumerate(features)


def prepare_pretraining_data(
    corpus_dir,
    output_dir,
    *,
    vocab_size: int = 8000,
    max_seq_length: int = 128,
    max_predictions_per_seq: int = 20,
    dupe_factor: int = 10,
    short_seq_prob: float = 0.1,
    masked_lm_prob: float = 0.15,
    whole_word_masking: bool = False,
    seed: int = 12345,
    eval_fraction: float = 0.05,
    lowercase: bool = True,
):
    """Tokenizer and train/eval data sources for BERT pretraining on a corpus, prepared once.

    Trains a SentencePiece model on the corpus and builds the `BertPretraining` dataset under
    `output_dir/bert_pretraining-<key>/`, where the key hashes the corpus contents and every
    setting; a later call with the same corpus and settings reuses that folder. The folder is
    built under a temporary name and renamed when complete, so it is never seen half-written
    (`output_dir` must be a local path). On a multi-host TPU slice every host may prepare its
    own copy in a local `output_dir`: preparation is deterministic, so the copies are equal, and
    `batching.pretraining_batches(..., shard_index=jax.process_index(),
    shard_count=jax.process_count())` gives each host its share.

    Args:
      corpus_dir: a folder of `.txt`/`.txt.gz` files; see `corpus`.
      output_dir: where prepared data is kept.
      vocab_size: SentencePiece vocabulary size (an upper bound for tiny corpora).
      max_seq_length, max_predictions_per_seq, dupe_factor, short_seq_prob, masked_lm_prob,
        whole_word_masking: see `bert_pretraining.PretrainingOptions`.
      seed: seed of tokenizer sampling, the eval split and example creation.
      eval_fraction: fraction of documents held out for evaluation.
      lowercase: an uncased tokenizer.

    Returns:
      (train_source, eval_source, tokenizer): `ExampleSource`s (random access to dicts of
      arrays, for `batching.pretraining_batches`) and the `SentencePieceTokenizer`.
    """
    options = PretrainingOptions(
        max_seq_length=max_seq_length,
        max_predictions_per_seq=max_predictions_per_seq,
        dupe_factor=dupe_factor,
        short_seq_prob=short_seq_prob,
        masked_lm_prob=masked_lm_prob,
        whole_word_masking=whole_word_masking,
    )
    files = corpus.list_corpus_files(corpus_dir)
    if not pathlib.Path(corpus_dir).is_dir():  # TFDS's manual_dir must be a folder
        raise ValueError(f"corpus {corpus_dir} must be a folder of .txt/.txt.gz files")
    settings = {
        "builder_version": str(BertPretraining.VERSION),
        "corpus_sha256": _corpus_digest(corpus_dir, files),
        "vocab_size": vocab_size,
        "lowercase": lowercase,
        "options": dataclasses.asdict(options),
        "eval_fraction": eval_fraction,
        "seed": seed,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    prepared = pathlib.Path(output_dir) / f"bert_pretraining-{key}"
    if prepared.is_dir():
        _LOG.info("Reusing BERT pretraining data in %s", prepared)
    else:
        _prepare(prepared, corpus_dir, files, settings, options)
    tokenizer = tokenizers.SentencePieceTokenizer(prepared / tokenizers.SENTENCEPIECE_FILENAME)
    config = make_config(tokenizer.path, options, eval_fraction=eval_fraction, seed=seed)
    sources = BertPretraining(config=config, data_dir=prepared / "tfds").as_data_source()
    return ExampleSource(sources["train"]), ExampleSource(sources["eval"]), tokenizer


def prepare_phases(data_config, num_train_steps: int):
    """One prepared dataset per sequence-length phase (BERT trains on 128 tokens for 90% of the
    steps, then 512): `data_config.phases` holds (max_seq_length, max_predictions_per_seq,
    fraction of the steps) per phase, the last one taking the steps left; the other fields are
    `prepare_pretraining_data`'s.

    Returns:
      ([(steps, train_source, eval_source)] per phase, tokenizer).
    """
    d = data_config
    phases, tokenizer, first_step = [], None, 0
    for i, (max_seq_length, max_predictions, fraction) in enumerate(d.phases):
        last = i == len(d.phases) - 1
        end_step = num_train_steps if last else first_step + round(fraction * num_train_steps)
        train_source, eval_source, tokenizer = prepare_pretraining_data(
            d.corpus_dir,
            d.output_dir,
            vocab_size=d.vocab_size,
            max_seq_length=max_seq_length,
            max_predictions_per_seq=max_predictions,
            dupe_factor=d.dupe_factor,
            short_seq_prob=d.short_seq_prob,
            masked_lm_prob=d.masked_lm_prob,
            whole_word_masking=d.whole_word_masking,
            seed=d.seed,
            eval_fraction=d.eval_fraction,
        )
        phases.append((end_step - first_step, train_source, eval_source))
        first_step = end_step
    return phases, tokenizer


class ExampleSource:
    """A split of a prepared `BertPretraining` dataset: `len()`, `[i]` and `__getitems__`.

    Reads the same records as the TFDS data source it wraps, but decodes them directly (a
    `tf.train.Example` proto whose arrays are raw bytes) instead of through TFDS's generic
    feature decoder, which costs several times more CPU per example (benchmarks/bert_data.py
    compares the batching rates). Arrays are read-only views of the record.

    Attributes:
      tfds_source: the wrapped `builder.as_data_source()[split]` (its `dataset_info` etc.).
    """

    def __init__(self, tfds_source):
        self.tfds_source = tfds_source
        self._records = tfds_source.data_source
        features = tfds_source.dataset_info.features
        self._specs = {name: (np.dtype(f.np_dtype), f.shape) for name, f in features.items()}

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self._decode(self._records[index])

    def __getitems__(self, indices) -> list[dict[str, np.ndarray]]:
        records = self._records.__getitems__([int(i) for i in indices])
        return [self._decode(record) for record in records]

    def _decode(self, record: bytes) -> dict[str, np.ndarray]:
        feature = tf_example_pb2.Example.FromString(record).features.feature
        example = {}
        for name, (dtype, shape) in self._specs.items():
            value = feature[name]
            if shape:
                example[name] = np.frombuffer(value.bytes_list.value[0], dtype).reshape(shape)
            else:  # scalars are stored as numbers, not bytes
                kind = "float_list" if value.HasField("float_list") else "int64_list"
                example[name] = dtype.type(getattr(value, kind).value[0])
        return example

    def __repr__(self):
        return f"ExampleSource({self.tfds_source!r}, len={len(self)})"


def _prepare(prepared: pathlib.Path, corpus_dir, files, settings, options):
    prepared.parent.mkdir(parents=True, exist_ok=True)
    tmp = prepared.with_name(f".{prepared.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tokenizer = tokenizers.train_sentencepiece(
            files,
            tmp,
            settings["vocab_size"],
            lowercase=settings["lowercase"],
            seed=settings["seed"],
        )
        config = make_config(
            tokenizer.path, options, eval_fraction=settings["eval_fraction"], seed=settings["seed"]
        )
        builder = BertPretraining(config=config, data_dir=tmp / "tfds")
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(corpus_dir)),
            file_format="array_record",
        )
        splits = {name: info.num_examples for name, info in builder.info.splits.items()}
        summary = {**settings, "corpus_files": [str(f) for f in files], "num_examples": splits}
        (tmp / "settings.json").write_text(json.dumps(summary, indent=2) + "\n")
        try:
            os.rename(tmp, prepared)
        except OSError:
            if not prepared.is_dir():
                raise
            # Another process prepared the same data first; its copy is identical.
        _LOG.info("Prepared BERT pretraining data %s in %s", splits, prepared)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _corpus_digest(corpus_dir, files) -> str:
    """SHA-256 over the corpus files' paths (relative to the corpus) and contents."""
    digest = hashlib.sha256()
    for path in files:
        relative = path.relative_to(corpus_dir)
        digest.update(f"{relative}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()
