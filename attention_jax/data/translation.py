r"""Parallel text for machine translation: readers and a local TFDS dataset (no TensorFlow).

`ParallelText` is a `tfds.core.GeneratorBasedBuilder` whose `manual_dir` is a folder in one of
two layouts:

- "multi30k": line-aligned `<split>.<lang>` files, plain or `.gz`, as Multi30k task 1 ships them
  (`train.en.gz`, `val.de.gz`, ...). Each split with files for both languages becomes a TFDS
  split: "train", "val" -> "validation", "test2016" (or "test_2016_flickr") -> "test", and any
  other name as it is.
- "bible_tsv": one verse-aligned `.tsv`/`.tsv.gz` file with a `book\tchapter\tverse\t<lang>...`
  header, such as King James <-> Reina-Valera 1909. Whole chapters, chosen by a stable hash of
  "book chapter", are held out as "validation" so that no verse's context leaks into "train".

Examples are `{"source": Text, "target": Text}` in array_record files, kept in file order (readers
shuffle). Read them with `builder.as_data_source()` (bytes; `as_dataset()` would need TensorFlow).
`load_pairs` prepares the dataset once and returns a split as (source, target) string pairs;
`load_dataset_pairs` does the same for a local layout or a TFDS catalogue name,
`joint_tokenizer` trains one SentencePiece model on both sides of the training pairs, and
`pair_batches` encodes pairs into length-bucketed batches.

With internet access, TFDS catalogue datasets such as `wmt14_translate/de-en` or
`wmt17_translate/de-en` serve instead: `tfds.builder(name).download_and_prepare(
file_format="array_record")`, then `as_data_source(split)` gives examples keyed by language code
(`{"de": bytes, "en": bytes}`).
"""

import dataclasses
import hashlib
import json
import logging
import pathlib
import re
import shutil
import tempfile

import tensorflow_datasets as tfds

from attention_jax.data import batching, corpus, tokenizers

_LOG = logging.getLogger(__name__)

Pair = tuple[str, str]  # (source sentence, target sentence)

LAYOUTS = ("multi30k", "bible_tsv")

# Multi30k's file names for its standard splits -> TFDS split names.
_MULTI30K_SPLITS = {"val": "validation", "test2016": "test", "test_2016_flickr": "test"}
_NAME = re.compile(r"[\w-]+")  # languages and split names: safe in file, config and split names
_TSV_SUFFIXES = (".tsv", ".tsv.gz")


def read_parallel_files(source_path, target_path) -> list[Pair]:
    """Pairs of stripped lines from two line-aligned files (plain or `.gz`); pairs where either
    side is empty are dropped."""
    sources, targets = _read_lines(source_path), _read_lines(target_path)
    if len(sources) != len(targets):
        raise ValueError(
            f"{source_path} has {len(sources)} lines but {target_path} has {len(targets)}"
        )
    pairs = [(s, t) for s, t in zip(sources, targets, strict=True) if s and t]
    if not pairs:
        raise ValueError(f"{source_path} and {target_path} have no pair of non-empty lines")
    return pairs


def read_bible_tsv(path, source_lang="en", target_lang="es") -> list[tuple[str, Pair]]:
    r"""Verse pairs of a verse-aligned TSV, each with its chapter key "book chapter".

    The header names the tab-separated columns (`book\tchapter\tverse\ten\tes`); it must have
    "book", "chapter" and both languages, in any order. A row with another number of fields, or
    without a book or chapter, is malformed. Blank lines are skipped, and so are verses that are
    empty in either language.
    """
    lines = _read_lines(path, strip=False)
    header = [name.strip() for name in lines[0].split("\t")] if lines else []
    needed = ["book", "chapter", source_lang, target_lang]
    missing = [name for name in needed if name not in header]
    if missing:
        raise ValueError(f"{path} header {header} lacks the column(s) {missing}")
    book, chapter, source, target = (header.index(name) for name in needed)
    verses = []
    for line_number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split("\t")]
        if len(fields) != len(header):
            raise ValueError(
                f"{path} line {line_number} has {len(fields)} tab-separated fields, "
                f"the header has {len(header)}"
            )
        if not fields[book] or not fields[chapter]:
            raise ValueError(f"{path} line {line_number} has no book or chapter")
        pair = (fields[source], fields[target])
        if all(pair):
            verses.append((f"{fields[book]} {fields[chapter]}", pair))
    if not verses:
        raise ValueError(f"{path} has no verse with text in both {source_lang} and {target_lang}")
    return verses


@dataclasses.dataclass(eq=False, kw_only=True)
class ParallelTextConfig(tfds.core.BuilderConfig):
    """A builder config; make it with `make_config` so that its name identifies the data.

    Attributes:
      layout: "multi30k" or "bible_tsv" (see the module docstring).
      source_lang, target_lang: language codes as in the file names or the TSV header.
      validation_fraction: bible_tsv only: the fraction of chapters held out for "validation".
    """

    layout: str
    source_lang: str
    target_lang: str
    validation_fraction: float = 0.02


def make_config(
    layout, source_lang, target_lang, *, validation_fraction: float = 0.02
) -> ParallelTextConfig:
    """A config named "multi30k_en-de" or "bible_tsv_en-es_<hash of the held-out fraction>"."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown parallel text layout {layout!r}; choose one of {LAYOUTS}")
    for lang in (source_lang, target_lang):
        if not isinstance(lang, str) or not _NAME.fullmatch(lang):
            raise ValueError(f"language {lang!r} must be letters, digits, '_' or '-'")
    if source_lang == target_lang:
        raise ValueError(f"source and target language are both {source_lang!r}")
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    name = f"{layout}_{source_lang}-{target_lang}"
    description = f"{source_lang} -> {target_lang}, {layout} layout"
    if layout == "bible_tsv":
        digest = hashlib.sha256(json.dumps({"validation_fraction": validation_fraction}).encode())
        name += f"_{digest.hexdigest()[:8]}"
        description += f", {validation_fraction:g} of the chapters held out"
    return ParallelTextConfig(
        name=name,
        description=description,
        layout=layout,
        source_lang=source_lang,
        target_lang=target_lang,
        validation_fraction=validation_fraction,
    )


class ParallelText(tfds.core.GeneratorBasedBuilder):
    """Sentence pairs from local files in the Multi30k or the verse-aligned TSV layout."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Multi30k-style line-aligned files and verse-aligned TSV."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Set manual_dir to a folder of line-aligned <split>.<lang>[.gz] files (multi30k layout) "
        "or to a folder holding one verse-aligned .tsv/.tsv.gz file (bible_tsv layout)."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.splitlines()[0],
            features=tfds.features.FeaturesDict(
                {"source": tfds.features.Text(), "target": tfds.features.Text()}
            ),
            # Holds the digest of the input files, so `load_pairs` can tell stale data apart.
            metadata=tfds.core.MetadataDict(),
            # Pairs keep their file order; readers shuffle.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config
        manual_dir = pathlib.Path(dl_manager.manual_dir)
        self.info.metadata["inputs_sha256"] = _inputs_digest(manual_dir, config)
        if config.layout == "multi30k":
            splits = _multi30k_files(manual_dir, config.source_lang, config.target_lang)
            return {
                split: self._generate_examples(read_parallel_files(*paths))
                for split, paths in splits.items()
            }
        verses = read_bible_tsv(_bible_tsv_file(manual_dir), config.source_lang, config.target_lang)
        held_out = _held_out_chapters([key for key, _ in verses], config.validation_fraction)
        return {
            "train": self._generate_examples([p for key, p in verses if key not in held_out]),
            "validation": self._generate_examples([p for key, p in verses if key in held_out]),
        }

    def _generate_examples(self, pairs):
        for index, (source, target) in enumerate(pairs):
            yield index, {"source": source, "target": target}


def load_pairs(
    manual_dir,
    layout,
    source_lang,
    target_lang,
    split,
    *,
    data_dir,
    validation_fraction: float = 0.02,
) -> list[Pair]:
    """A split of a `ParallelText` dataset as (source, target) strings, in file order.

    The dataset is prepared under `data_dir/parallel_text/<config name>/` on the first call and
    reused afterwards. A `data_dir` holds one preparation per config: reusing it for other input
    files raises ValueError rather than returning the old data.

    Args:
      manual_dir: the folder of input files (see the module docstring for the layouts).
      layout, source_lang, target_lang, validation_fraction: see `make_config`.
      split: e.g. "train", "validation", "test".
      data_dir: where TFDS keeps prepared datasets.
    """
    manual_dir = pathlib.Path(manual_dir).expanduser().resolve()
    if not manual_dir.is_dir():
        raise ValueError(f"manual_dir {manual_dir} is not a folder")
    config = make_config(layout, source_lang, target_lang, validation_fraction=validation_fraction)
    inputs_digest = _inputs_digest(manual_dir, config)
    builder = ParallelText(config=config, data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)),
        file_format="array_record",
    )
    if builder.info.metadata.get("inputs_sha256") != inputs_digest:
        raise ValueError(
            f"{builder.data_dir} was prepared from other files than those now in {manual_dir}; "
            "delete it or choose another data_dir"
        )
    if split not in builder.info.splits:
        raise ValueError(
            f"split {split!r} is not in {config.name}; choose one of {sorted(builder.info.splits)}"
        )
    source = builder.as_data_source(split)
    examples = source.__getitems__(range(len(source)))
    return [(ex["source"].decode(), ex["target"].decode()) for ex in examples]


def load_dataset_pairs(
    dataset, split, *, manual_dir, source_lang, target_lang, data_dir
) -> list[Pair]:
    """A split as (source, target) strings: a local layout of `LAYOUTS` read from `manual_dir`
    (see `load_pairs`), or a TFDS catalogue dataset such as "wmt14_translate/de-en", which
    downloads once (internet needed) and keys its examples by language code."""
    if dataset in LAYOUTS:
        return load_pairs(manual_dir, dataset, source_lang, target_lang, split, data_dir=data_dir)
    builder = tfds.builder(dataset, data_dir=data_dir)
    builder.download_and_prepare(file_format="array_record")

    def text(x):
        return x.decode() if isinstance(x, bytes) else str(x)

    return [(text(ex[source_lang]), text(ex[target_lang])) for ex in builder.as_data_source(split)]


def joint_tokenizer(
    train_pairs: list[Pair], output_dir, *, vocab_size: int, lowercase: bool, seed: int
) -> tokenizers.SentencePieceTokenizer:
    """One SentencePiece model for both languages (shared embeddings need a joint vocabulary),
    trained once per corpus and settings under `output_dir` and reused afterwards."""
    digest = hashlib.sha256(json.dumps([vocab_size, lowercase, seed]).encode())
    for pair in train_pairs:
        digest.update("\t".join(pair).encode())
    model_dir = pathlib.Path(output_dir) / f"translation_spm-{digest.hexdigest()[:16]}"
    if not (model_dir / tokenizers.SENTENCEPIECE_FILENAME).is_file():
        with tempfile.TemporaryDirectory(dir=output_dir) as tmp:
            text = pathlib.Path(tmp) / "train.txt"
            text.write_text("".join(f"{s}\n{t}\n" for s, t in train_pairs), encoding="utf-8")
            tokenizers.train_sentencepiece(
                [text], pathlib.Path(tmp) / "spm", vocab_size, lowercase=lowercase, seed=seed
            )
            shutil.move(pathlib.Path(tmp) / "spm", model_dir)  # appears complete or not at all
    return tokenizers.SentencePieceTokenizer(model_dir / tokenizers.SENTENCEPIECE_FILENAME)


def pair_batches(
    tokenizer, pairs: list[Pair], batch_size, seed, *, shuffle, max_len=None, **shard
) -> batching.PairBatches:
    """`PairBatches` of the encoded pairs; with `max_len`, pairs with a longer side are dropped.

    [CLS] and [SEP], which every SentencePiece model of this project reserves, serve as BOS
    and EOS.
    """
    sources = tokenizer.encode_batch([s for s, _ in pairs])
    targets = tokenizer.encode_batch([t for _, t in pairs])
    if max_len is not None:
        kept = [
            (s, t) for s, t in zip(sources, targets, strict=True) if max(len(s), len(t)) < max_len
        ]
        sources, targets = [s for s, _ in kept], [t for _, t in kept]
    return batching.PairBatches(
        sources,
        targets,
        batch_size,
        seed,
        bos_id=tokenizer.cls_id,
        eos_id=tokenizer.sep_id,
        shuffle=shuffle,
        **shard,
    )


def _read_lines(path, *, strip: bool = True) -> list[str]:
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"file {path} not found")
    return list(corpus.read_lines(path, strip=strip))


def _multi30k_files(
    manual_dir, source_lang, target_lang
) -> dict[str, tuple[pathlib.Path, pathlib.Path]]:
    """TFDS split name -> (source file, target file) for each split with both languages."""
    files = {}  # (file split name, language) -> path
    for path in sorted(manual_dir.iterdir()):
        stem, dot, lang = path.name.removesuffix(".gz").rpartition(".")
        if path.is_file() and dot and lang in (source_lang, target_lang):
            if (stem, lang) in files:
                raise ValueError(f"{manual_dir} has both {files[stem, lang].name} and {path.name}")
            files[stem, lang] = path
    splits = {}
    for (stem, lang), path in files.items():
        if lang != source_lang:
            continue
        if (stem, target_lang) not in files:
            _LOG.info("Skipping %s: no %s.%s[.gz] beside it", path, stem, target_lang)
            continue
        split = _MULTI30K_SPLITS.get(stem, stem)
        if not _NAME.fullmatch(split):
            raise ValueError(f"split name {stem!r} of {path.name} must be letters, digits, _ or -")
        if split in splits:
            raise ValueError(
                f"{manual_dir} has two {split!r} splits: {splits[split][0].name} and {path.name}"
            )
        splits[split] = (path, files[stem, target_lang])
    if not splits:
        raise ValueError(
            f"{manual_dir} has no <split>.{source_lang}[.gz] with a <split>.{target_lang}[.gz]"
        )
    return splits


def _bible_tsv_file(manual_dir) -> pathlib.Path:
    files = sorted(p for p in manual_dir.iterdir() if p.name.endswith(_TSV_SUFFIXES))
    if len(files) != 1:
        raise ValueError(
            f"{manual_dir} must hold exactly one .tsv or .tsv.gz file, found {len(files)}"
        )
    return files[0]


def _inputs_digest(manual_dir, config: ParallelTextConfig) -> str:
    """SHA-256 over the names and contents of the files a config reads from `manual_dir`."""
    if config.layout == "multi30k":
        splits = _multi30k_files(manual_dir, config.source_lang, config.target_lang)
        paths = [path for pair in splits.values() for path in pair]
    else:
        paths = [_bible_tsv_file(manual_dir)]
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.name}\0".encode())
        with open(path, "rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()


def _held_out_chapters(keys, fraction: float) -> set[str]:
    """The `round(fraction * chapters)` chapters (at least one) with the smallest SHA-256 of their
    key: the same chapters on every machine and run, whatever the order of the file."""
    chapters = sorted(set(keys), key=lambda key: hashlib.sha256(key.encode()).digest())
    if len(chapters) < 2:
        raise ValueError(f"need at least two chapters to hold one out, got {len(chapters)}")
    count = min(max(1, round(fraction * len(chapters))), len(chapters) - 1)
    return set(chapters[:count])
