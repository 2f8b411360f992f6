"""Retrieval data for dense passage retrieval (Karpukhin et al. 2020): questions and passages.

Two readers give the same `Example`s: `read_dpr_json` reads DPR's own training files (a JSON
list of {"question", "answers", "positive_ctxs", "negative_ctxs", "hard_negative_ctxs"}, each
context {"title", "text", ...}), and `read_pydocs` the Python documentation sections of
`../shared/data/pydocs/sections.jsonl.gz` (JSON lines {"doc", "title", "is_question", "text"}),
where the query is the section's title path (the document's path, then the title) and the
passage its body. `split_by_group` holds out whole documents, never single sections.

Inputs for BERT are `[CLS] question [SEP]` and `[CLS] title [SEP] text [SEP]` (`[CLS] text [SEP]`
without a title), truncated and padded to a fixed length (`glue.build_inputs`), one segment.
`read_folder` cuts the text files of a folder into passages of at most `words` words, as the
paper cut Wikipedia into 100-word passages.

Z rows (questions or passages), T question length, S passage length.
"""

import gzip
import json
import os
import pathlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from attention_jax.data import glue, tokenizers

PYDOCS = "../shared/data/pydocs/sections.jsonl.gz"
TEXT_SUFFIXES = (".txt", ".md", ".rst")


class Passage(NamedTuple):
    title: str
    text: str


class Example(NamedTuple):
    """A question, its positive passages, DPR's negatives, and the group (document) it is from."""

    question: str
    positives: list[Passage]
    negatives: list[Passage]
    hard_negatives: list[Passage]
    group: str


def _passages(contexts) -> list[Passage]:
    return [Passage(c.get("title", ""), c["text"]) for c in contexts]


def read_dpr_json(path: str | os.PathLike) -> list[Example]:
    """DPR's training format; questions without a positive passage are skipped (as DPR does).

    Each example is its own group.
    """
    try:
        rows = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
        examples = [
            Example(
                row["question"],
                _passages(row["positive_ctxs"]),
                _passages(row.get("negative_ctxs", [])),
                _passages(row.get("hard_negative_ctxs", [])),
                str(i),
            )
            for i, row in enumerate(rows)
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path}: not a DPR JSON file ({type(error).__name__}: {error})") from None
    examples = [e for e in examples if e.positives]
    if not examples:
        raise ValueError(f"{path}: no question with a positive passage")
    return examples


def title_path(doc: str, title: str) -> str:
    """'library/pickle.rst.txt', 'Pickling Class Instances' → 'library/pickle > Pickling …'."""
    return f"{doc.removesuffix('.txt').removesuffix('.rst')} > {title}"


def read_pydocs(path: str | os.PathLike = PYDOCS) -> list[Example]:
    """One example per documentation section: its title path → its body; grouped by document."""
    if not pathlib.Path(path).is_file():
        raise ValueError(f"pydocs file {path} not found")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        try:
            rows = [json.loads(line) for line in f if line.strip()]
            examples = [
                Example(
                    title_path(r["doc"], r["title"]), [Passage("", r["text"])], [], [], r["doc"]
                )
                for r in rows
            ]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not pydocs sections ({error})") from None
    if not examples:
        raise ValueError(f"{path}: no sections")
    return examples


def split_by_group(
    examples: Sequence[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """(kept, held out): round(fraction · groups) whole groups drawn by `seed` are held out."""
    groups = sorted({e.group for e in examples})
    count = round(fraction * len(groups))
    if not 0 < count < len(groups):
        raise ValueError(f"a fraction of {fraction} of {len(groups)} documents holds none or all")
    held = {groups[i] for i in np.random.default_rng(seed).permutation(len(groups))[:count]}
    return [e for e in examples if e.group not in held], [e for e in examples if e.group in held]


def _features(rows: list[list[int]], tokenizer, max_length: int) -> dict[str, np.ndarray]:
    if max_length < 3:
        raise ValueError(f"max length {max_length} leaves no room for text after [CLS] and [SEP]")
    inputs = [glue.build_inputs(ids[: max_length - 2], None, tokenizer, max_length) for ids in rows]
    features = glue.stack_inputs(inputs, max_length)
    return {"input_ids": features["input_ids"], "input_mask": features["input_mask"]}


def question_features(questions: Sequence[str], tokenizer: tokenizers.Tokenizer, max_length: int):
    """{"input_ids", "input_mask"}: int32 [Z, T] of `[CLS] question [SEP]`."""
    return _features(tokenizer.encode_batch(list(questions)), tokenizer, max_length)


def passage_features(passages: Sequence[Passage], tokenizer: tokenizers.Tokenizer, max_length: int):
    """{"input_ids", "input_mask"}: int32 [Z, S] of `[CLS] title [SEP] text [SEP]`."""
    titles = tokenizer.encode_batch([p.title for p in passages])
    texts = tokenizer.encode_batch([p.text for p in passages])
    rows = [[*t, tokenizer.sep_id, *x] if t else x for t, x in zip(titles, texts, strict=True)]
    return _features(rows, tokenizer, max_length)


def training_features(
    examples: Sequence[Example],
    tokenizer: tokenizers.Tokenizer,
    max_question_length: int,
    max_passage_length: int,
    hard_negatives: Sequence[Passage] | None = None,
) -> dict[str, np.ndarray]:
    """One row per example: the question and its first positive passage, and, when given, one
    hard negative passage per example.

    Returns:
      "question_input_ids"/"question_input_mask" [Z, T], "passage_…" [Z, S] and, with
      `hard_negatives`, "hard_negative_…" [Z, S].
    """
    sides = {
        "question": question_features(
            [e.question for e in examples], tokenizer, max_question_length
        ),
        "passage": passage_features(
            [e.positives[0] for e in examples], tokenizer, max_passage_length
        ),
    }
    if hard_negatives is not None:
        sides["hard_negative"] = passage_features(hard_negatives, tokenizer, max_passage_length)
    return {f"{side}_{key}": value for side, f in sides.items() for key, value in f.items()}


def collection(example_sets: Sequence[Sequence[Example]]) -> list[Passage]:
    """Every distinct passage of the examples (positives and negatives), in first-seen order."""
    seen = {}
    for examples in example_sets:
        for e in examples:
            for p in (*e.positives, *e.negatives, *e.hard_negatives):
                seen.setdefault(p, len(seen))
    return list(seen)


def relevant(examples: Sequence[Example], passages: Sequence[Passage]) -> list[set[int]]:
    """For each example, the indices in `passages` of its positive passages."""
    index = {p: i for i, p in enumerate(passages)}
    return [{index[p] for p in e.positives} for e in examples]


def read_folder(folder: str | os.PathLike, words: int = 100) -> list[Passage]:
    """The .txt/.md/.rst files under `folder` as passages of at most `words` words, titled by
    the file's path relative to `folder`."""
    root = pathlib.Path(folder)
    if not root.is_dir():
        raise ValueError(f"folder {folder} not found")
    passages = []
    for path in sorted(p for p in root.rglob("*") if p.suffix in TEXT_SUFFIXES and p.is_file()):
        tokens = path.read_text(encoding="utf-8", errors="replace").split()
        title = str(path.relative_to(root))
        passages += [
            Passage(title, " ".join(tokens[i : i + words])) for i in range(0, len(tokens), words)
        ]
    if not passages:
        raise ValueError(f"folder {folder} has no text in {', '.join(TEXT_SUFFIXES)} files")
    return passages
