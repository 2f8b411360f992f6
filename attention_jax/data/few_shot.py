"""In-context tasks built from the shipped data, and the JSON-lines task format they are saved in
(`evaluation.few_shot` reads it back).

- `next_verse`: a verse, then the verse that follows it in its chapter among `num_choices`
  candidates (the others drawn from other chapters): multiple choice, chance 1 / num_choices.
- `last_word`: a verse without its last word, which the model completes (LAMBADA's format,
  Paperno et al. 2016, as GPT-2 and GPT-3 evaluate it): free-form exact match.
- `sst2`: a sentence of SST-2's leak-free validation split (`glue.sentence_split`), "positive"
  or "negative", with shots drawn from the training sentences: multiple choice, chance 1/2.

Build the Bible tasks from held-out chapters, so no example was seen in pre-training.
"""

import json
import pathlib
import re

import numpy as np

from attention_jax.data import glue
from attention_jax.evaluation.few_shot import FIELDS, Example, Task

_LAST_WORD = re.compile(r"^(.*\S)\s+([A-Za-z]{3,})[.,;:!?]?$")


def _short(text: str, max_words: int) -> bool:
    return len(text.split()) <= max_words


def next_verse(
    chapters: list[list[str]], num_examples: int, num_choices: int, seed: int, max_words: int
) -> Task:
    """Pairs of consecutive verses of `chapters` (lists of verses) of at most `max_words` words
    each (so that shots fit a short context), candidates in random order."""
    rng = np.random.default_rng(seed)
    pairs = [
        (c, v)
        for c, chapter in enumerate(chapters)
        for v in range(len(chapter) - 1)
        if _short(chapter[v], max_words) and _short(chapter[v + 1], max_words)
    ]
    if len(chapters) < 2 or len(pairs) < num_examples:
        raise ValueError(f"{len(pairs)} verse pairs in {len(chapters)} chapters: too few")
    examples = []
    for p in rng.choice(len(pairs), num_examples, replace=False):
        c, v = pairs[p]
        others = [pairs[q] for q in rng.permutation(len(pairs)) if pairs[q][0] != c]
        choices = [chapters[c][v + 1]] + [chapters[o][w + 1] for o, w in others[: num_choices - 1]]
        order = rng.permutation(num_choices)
        examples.append(
            Example(chapters[c][v], tuple(choices[i] for i in order), int(np.argmin(order)))
        )
    return Task(
        "next_verse",
        tuple(examples),
        description="Each verse of the Bible is followed by the verse that comes next.",
    )


def last_word(chapters: list[list[str]], num_examples: int, seed: int, max_words: int) -> Task:
    """Verses of at most `max_words` words that end in a word of three letters or more (before
    any final punctuation)."""
    verses = [verse for chapter in chapters for verse in chapter if _short(verse, max_words)]
    matches = [m for m in map(_LAST_WORD.match, verses) if m]
    if len(matches) < num_examples:
        raise ValueError(f"{len(matches)} verses end in a word, fewer than {num_examples}")
    picked = np.random.default_rng(seed).choice(len(matches), num_examples, replace=False)
    examples = tuple(Example(matches[i][1], answer=matches[i][2]) for i in picked)
    return Task("last_word", examples, fewshot_delimiter=" ", until=(" ", "\n"))


def sst2(
    train_file,
    num_examples: int,
    pool_size: int,
    *,
    validation_size: int,
    seed: int,
    max_words: int,
) -> Task:
    """SST-2 sentences of the sentence-level validation split, shots from the training rows;
    both of at most `max_words` words."""
    texts, labels_Z = glue.read_glue_tsv(train_file)
    train_rows, eval_rows, _ = glue.sentence_split(texts, validation_size, seed)
    train_rows, eval_rows = (
        [i for i in rows if _short(texts[i][0], max_words)] for rows in (train_rows, eval_rows)
    )
    rng = np.random.default_rng(seed)
    words = ("negative", "positive")

    def examples(rows):
        return tuple(
            Example(f"Review: {texts[i][0]}\nSentiment:", words, int(labels_Z[i])) for i in rows
        )

    return Task(
        "sst2",
        examples(rng.choice(eval_rows, min(num_examples, len(eval_rows)), replace=False)),
        examples(rng.choice(train_rows, pool_size, replace=False)),
        description="Each movie review is followed by its sentiment, positive or negative.",
    )


def save(task: Task, path) -> None:
    """Writes `task` as JSON lines: a header with its fields, its examples, then its pool."""

    def row(example: Example, pool: bool) -> dict:
        fields = (
            {"choices": list(example.choices), "gold": example.gold}
            if example.choices
            else {"answer": example.answer}
        )
        return {"context": example.context, **fields, **({"split": "fewshot"} if pool else {})}

    header = {"name": task.name, **{field: getattr(task, field) for field in FIELDS}}
    rows = (
        [header] + [row(e, False) for e in task.examples] + [row(e, True) for e in task.pool or ()]
    )
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
