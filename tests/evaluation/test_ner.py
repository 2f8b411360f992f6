"""Entity-level F1 with conlleval semantics, by hand and against seqeval where installed."""

import numpy as np
import pytest

from attention_jax.evaluation import ner


@pytest.mark.parametrize(
    "tags, expected",
    [
        (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),
        # IOB1: I- starts a chunk; B- splits two touching chunks of one type.
        (["I-LOC", "I-LOC", "B-LOC", "O", "I-ORG"], [("LOC", 0, 1), ("LOC", 2, 2), ("ORG", 4, 4)]),
        # A type change ends a chunk even without B-; B- after B- starts a new one.
        (
            ["B-PER", "I-LOC", "B-PER", "B-PER", "I-PER"],
            [("PER", 0, 0), ("LOC", 1, 1), ("PER", 2, 2), ("PER", 3, 4)],
        ),
        (["O", "O"], []),
        ([], []),
    ],
)
def test_entities(tags, expected):
    assert ner.entities(tags) == expected


def test_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "I-ORG", "O", "B-MISC"]]
    guess = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "I-ORG", "O", "O", "B-MISC"]]
    # Gold PER(0,0-1) LOC(0,3) ORG(1,0-2) MISC(1,4); guessed PER(0,0-1) ORG(0,3) ORG(1,0-1)
    # MISC(1,4). Correct: PER, MISC (ORG(1) has the wrong end, ORG(0) the wrong type).
    scores = ner.entity_scores(gold, guess)
    assert scores["precision"] == 2 / 4 and scores["recall"] == 2 / 4 and scores["f1"] == 0.5
    assert scores["accuracy"] == 7 / 9
    assert scores["per_type"] == {
        "LOC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
        "MISC": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
        "ORG": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
        "PER": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
    }


def test_iob1_and_iob2_score_alike_and_sentences_close_chunks():
    iob1 = [["I-PER", "I-PER", "B-PER"], ["I-LOC"]]
    iob2 = [["B-PER", "I-PER", "B-PER"], ["B-LOC"]]
    assert ner.entity_scores(iob1, iob2)["f1"] == 1.0
    # Splitting a sentence in two splits the chunk across the boundary, so it no longer matches.
    scores = ner.entity_scores([["B-PER", "I-PER"]], [["B-PER", "I-PER"]])
    split = ner.entity_scores([["B-PER"], ["I-PER"]], [["B-PER"], ["B-PER"]])
    assert scores["f1"] == 1.0 and split["f1"] == 1.0 and split["per_type"]["PER"]["support"] == 2
    # Predicting only part of a span, or nothing at all, earns nothing.
    assert ner.entity_scores([["B-PER", "I-PER"]], [["B-PER", "O"]])["f1"] == 0.0
    nothing = ner.entity_scores([["B-PER", "I-PER"]], [["O", "O"]])
    assert nothing["precision"] == 0.0 and nothing["recall"] == 0.0 and nothing["f1"] == 0.0


def random_tags(rng, length):
    labels = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    return [labels[i] for i in rng.integers(0, len(labels), length)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_seqeval(seed):
    metrics = pytest.importorskip("seqeval.metrics")
    rng = np.random.default_rng(seed)
    gold = [random_tags(rng, n) for n in rng.integers(1, 12, 40)]
    # Predictions: gold with a quarter of the tags replaced (including invalid I- after O).
    guess = [
        [g if rng.random() > 0.25 else random_tags(rng, 1)[0] for g in sentence]
        for sentence in gold
    ]
    scores = ner.entity_scores(gold, guess)
    assert scores["precision"] == pytest.approx(metrics.precision_score(gold, guess))
    assert scores["recall"] == pytest.approx(metrics.recall_score(gold, guess))
    assert scores["f1"] == pytest.approx(metrics.f1_score(gold, guess))
    report = metrics.classification_report(gold, guess, output_dict=True, zero_division=0)
    for entity_type, per_type in scores["per_type"].items():
        assert per_type["f1"] == pytest.approx(report[entity_type]["f1-score"])
        assert per_type["support"] == report[entity_type]["support"]


def test_errors():
    with pytest.raises(ValueError, match="1 gold sentences but 2 predicted"):
        ner.entity_scores([["O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="sentence 0: 2 gold tags but 1 predicted"):
        ner.entity_scores([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="one sequence of tags per sentence"):
        ner.entity_scores(["O"], ["O"])
    with pytest.raises(ValueError, match="tag 'PER' is not O, B-TYPE or I-TYPE"):
        ner.entity_scores([["PER"]], [["O"]])
