"""SQuAD v1.1 EM/F1 on hand-computed examples, following the official evaluate-v1.1.py.

The official script: normalize_answer = white_space_fix(remove_articles(remove_punc(lower(s))))
with remove_articles = re.sub(r"\\b(a|an|the)\\b", " ", ·) and string.punctuation; F1 is the
token-multiset overlap; each question takes the max over its ground truths; totals are percent.
"""

import pytest

from attention_jax.evaluation import squad


@pytest.mark.parametrize(
    "text, normalized",
    [
        ("The  Quick, brown FOX!", "quick brown fox"),
        ("a.n apple", "apple"),  # punctuation goes before articles: "a.n" → "an" → removed
        ("Theater of the absurd", "theater of absurd"),  # only whole words are articles
        ("A-B testing", "ab testing"),
        ("1895–1943", "1895–1943"),  # the en dash is not ASCII punctuation
        ("\tAn\nanswer ", "answer"),
        ("", ""),
    ],
)
def test_normalize_answer(text, normalized):
    assert squad.normalize_answer(text) == normalized


def test_exact_match_and_f1_by_hand():
    assert squad.exact_match("The Eiffel Tower.", ["eiffel tower", "Paris"]) == 1.0
    assert squad.exact_match("Eiffel", ["eiffel tower"]) == 0.0
    # "cat sat on mat" vs "cat on mat": 3 shared, P = 3/4, R = 1 → F1 = 6/7.
    assert squad.f1("the cat sat on the mat", ["a cat on a mat"]) == pytest.approx(6 / 7)
    # Multiset overlap: "new new york" vs "new york" shares 2 → P = 2/3, R = 1 → 0.8.
    assert squad.f1("new new york", ["new york"]) == pytest.approx(0.8)
    # Max over ground truths: 0 against "london", 2·(1/2·1)/(1/2+1) = 2/3 against "paris".
    assert squad.f1("in paris", ["london", "paris"]) == pytest.approx(2 / 3)
    assert squad.f1("the", ["a"]) == 0.0  # both normalise to nothing
    with pytest.raises(ValueError, match="non-empty sequence"):
        squad.f1("x", [])
    with pytest.raises(ValueError, match="non-empty sequence"):
        squad.exact_match("x", "x")


def test_evaluate_by_hand(caplog):
    truths = {
        "q1": ["Denver Broncos"],
        "q2": ["Santa Clara, California", "Levi's Stadium"],
        "q3": ["1895"],
        "q4": ["gold"],
    }
    predictions = {
        "q1": "the Denver Broncos",
        "q2": "Levi's Stadium in Santa Clara",
        "q3": "in 1896",
        "q9": "ignored",
    }
    # q1: EM 1, F1 1. q2: vs "levis stadium" P 2/5 R 1 → 4/7; vs "santa clara california"
    # P 2/5 R 2/3 → 1/2; max 4/7. q3: 0. q4: unanswered → 0.
    scores = squad.evaluate(truths, predictions)
    assert scores["exact_match"] == pytest.approx(100 * 1 / 4)
    assert scores["f1"] == pytest.approx(100 * (1 + 4 / 7) / 4)
    assert "1 unanswered questions score 0, e.g. 'q4'" in caplog.text
    with pytest.raises(ValueError, match="no questions"):
        squad.evaluate({}, predictions)
