"""The in-context tasks built from the shipped data: right answers, candidates and splits."""

import pytest

from attention_jax.data import few_shot as tasks
from attention_jax.data import glue

CHAPTERS = [[f"Chapter {c} verse {v} ends with word{c}x{v}." for v in range(5)] for c in range(4)]


def test_next_verse_offers_the_following_verse_and_verses_of_other_chapters():
    task = tasks.next_verse(CHAPTERS, num_examples=10, num_choices=3, seed=0, max_words=8)
    assert len(task.examples) == 10 and len({e.context for e in task.examples}) == 10
    for e in task.examples:
        c, v = (int(w) for w in e.context.split()[1:4:2])
        assert e.choices[e.gold] == CHAPTERS[c][v + 1] and len(set(e.choices)) == 3
        assert all(f"Chapter {c} " not in x for i, x in enumerate(e.choices) if i != e.gold)
    assert {e.gold for e in task.examples} == {0, 1, 2}  # the right answer's place is random
    with pytest.raises(ValueError, match="too few"):
        tasks.next_verse(CHAPTERS[:1], num_examples=2, num_choices=3, seed=0, max_words=8)


def test_last_word_removes_the_final_word_and_its_punctuation():
    chapters = [["In the beginning God created the earth.", "Jesus wept", "He said, “Go.”"]]
    chapters[0].append("These twelve words are one too many for a verse this short.")
    task = tasks.last_word(chapters, num_examples=2, seed=0, max_words=11)
    assert sorted((e.context, e.answer) for e in task.examples) == [
        ("In the beginning God created the", "earth"),
        ("Jesus", "wept"),
    ]
    assert task.until == (" ", "\n") and not task.multiple_choice


def test_sst2_asks_validation_sentences_with_shots_from_training_rows(tmp_path):
    rows = [("a fine film", 1), ("a dull mess", 0), ("fine", 1), ("dull", 0), ("a mess", 0)]
    rows += [(f"sentence number {i} is good", 1) for i in range(20)]
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    task = tasks.sst2(path, num_examples=3, pool_size=5, validation_size=3, seed=1, max_words=6)
    texts, labels = glue.read_glue_tsv(path)
    train_rows, eval_rows, _ = glue.sentence_split(texts, 3, 1)
    sentence = {f"Review: {texts[i][0]}\nSentiment:": labels[i] for i in range(len(texts))}
    assert {e.context for e in task.examples} == {
        f"Review: {texts[i][0]}\nSentiment:" for i in eval_rows
    }
    assert {e.context for e in task.pool} <= {
        f"Review: {texts[i][0]}\nSentiment:" for i in train_rows
    }
    for e in task.examples + task.pool:
        assert e.choices == ("negative", "positive") and e.gold == sentence[e.context]
    assert len(task.pool) == 5
