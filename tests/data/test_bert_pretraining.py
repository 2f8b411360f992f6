"""BERT pretraining examples: layout, next-sentence sampling, masking statistics, determinism.

The corpus is made of unique words ("d3s2w1" = document 3, sentence 2, word 1), one WordPiece
each, so every token tells where it came from and the tests can check segments against the
documents they were cut from.
"""

import random

import numpy as np
import pytest

from attention_jax.data import bert_pretraining as bp
from attention_jax.data import tokenizers

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CONTINUATIONS = ["##x", "##y"]


def unique_word_corpus(num_docs, max_sentences, max_words, seed, continuation_prob=0.0):
    """Text documents and the vocabulary that makes each word one piece (plus ##x/##y pieces)."""
    rng = random.Random(seed)
    documents, vocab = [], []
    for d in range(num_docs):
        document = []
        for s in range(rng.randint(1, max_sentences)):
            words = []
            for w in range(rng.randint(1, max_words)):
                vocab.append(f"d{d}s{s}w{w}")
                # "d0s0w0xy" becomes d0s0w0 ##x ##y: a word of several pieces.
                suffix = "xy"[: rng.choice([1, 2])] if rng.random() < continuation_prob else ""
                words.append(vocab[-1] + suffix)
            document.append(" ".join(words))
        documents.append(document)
    return documents, [*SPECIALS, *CONTINUATIONS, *vocab]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(token-id documents, tokenizer) for 12 documents of 1-14 sentences."""
    texts, vocab = unique_word_corpus(12, 14, 9, seed=0)
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    tok = tokenizers.WordPieceTokenizer(path)
    return bp.tokenize_documents(texts, tok), tok


@pytest.fixture(scope="module")
def wwm_corpus(tmp_path_factory):
    texts, vocab = unique_word_corpus(8, 10, 8, seed=1, continuation_prob=0.6)
    path = tmp_path_factory.mktemp("wwm_vocab") / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    tok = tokenizers.WordPieceTokenizer(path)
    return bp.tokenize_documents(texts, tok), tok


def features_list(documents, tok, seed, **options):
    return list(
        bp.create_pretraining_features(documents, tok, bp.PretrainingOptions(**options), seed)
    )


def restore(features):
    """Input ids with the original tokens put back at the masked positions, and the length."""
    length = int(features["input_mask"].sum())
    ids = features["input_ids"][:length].copy()
    n = int(features["masked_lm_weights"].sum())
    ids[features["masked_lm_positions"][:n]] = features["masked_lm_ids"][:n]
    return ids, length


def locate(tokens, tok):
    """(document, sentence, word) of each token from its unique word."""
    out = []
    for t in tokens:
        d, s, w = tok.id_to_token(t)[1:].replace("s", " ").replace("w", " ").split()
        out.append((int(d), int(s), int(w)))
    return out


def test_layout_segments_padding_and_labels(corpus):
    documents, tok = corpus
    streams = {}  # document -> its tokens in order, to check segments are contiguous text
    for doc in documents:
        stream = [t for sentence in doc for t in sentence]
        streams[locate(stream[:1], tok)[0][0]] = stream
    L, P = 48, 7
    for f in features_list(documents, tok, seed=3, max_seq_length=L, max_predictions_per_seq=P):
        assert {k: (v.dtype, v.shape) for k, v in f.items()} == {
            "input_ids": (np.int32, (L,)),
            "input_mask": (np.int32, (L,)),
            "segment_ids": (np.int32, (L,)),
            "masked_lm_positions": (np.int32, (P,)),
            "masked_lm_ids": (np.int32, (P,)),
            "masked_lm_weights": (np.float32, (P,)),
            "next_sentence_labels": (np.int32, ()),
        }
        ids, length = restore(f)
        first_sep = int((f["segment_ids"][:length] == 0).sum()) - 1
        a, b = ids[1:first_sep], ids[first_sep + 1 : length - 1]
        # [CLS] A [SEP] B [SEP], segment 0 then 1, zero padding after.
        assert ids[0] == tok.cls_id and ids[first_sep] == tok.sep_id and ids[-1] == tok.sep_id
        assert len(a) >= 1 and len(b) >= 1
        assert tok.cls_id not in ids[1:] and ids[1:-1].tolist().count(tok.sep_id) == 1
        np.testing.assert_array_equal(f["input_mask"], np.arange(L) < length)
        np.testing.assert_array_equal(f["segment_ids"][first_sep + 1 : length], 1)
        for name in ("input_ids", "segment_ids"):
            np.testing.assert_array_equal(f[name][length:], 0)
        # A and B are contiguous runs of document text (the labels restored them exactly).
        where_a, where_b = locate(a, tok), locate(b, tok)
        for segment, where in ((a, where_a), (b, where_b)):
            stream = streams[where[0][0]]
            start = stream.index(segment[0])
            assert stream[start : start + len(segment)] == segment.tolist()
        doc_a, doc_b = where_a[0][0], where_b[0][0]
        if f["next_sentence_labels"] == 0:  # actual next: B follows A in the same document
            assert doc_a == doc_b and where_b[0] > where_a[-1]
        else:
            assert doc_a != doc_b


def test_masked_positions_weights_and_budget(corpus):
    documents, tok = corpus
    specials = {tok.cls_id, tok.sep_id, tok.pad_id}
    for P, prob in ((20, 0.15), (3, 0.5)):
        for f in features_list(
            documents,
            tok,
            seed=5,
            max_seq_length=40,
            max_predictions_per_seq=P,
            masked_lm_prob=prob,
        ):
            ids, length = restore(f)
            n = int(f["masked_lm_weights"].sum())
            assert n == min(P, max(1, round(length * prob)))
            np.testing.assert_array_equal(f["masked_lm_weights"], np.arange(P) < n)
            positions = f["masked_lm_positions"][:n]
            assert (np.diff(positions) > 0).all() and positions[-1] < length
            assert not specials & set(ids[positions].tolist())  # never [CLS], [SEP] or padding
            np.testing.assert_array_equal(f["masked_lm_positions"][n:], 0)
            np.testing.assert_array_equal(f["masked_lm_ids"][n:], 0)
            # Unmasked positions are untouched.
            unmasked = np.setdiff1d(np.arange(length), positions)
            np.testing.assert_array_equal(f["input_ids"][unmasked], ids[unmasked])


def test_masking_and_next_sentence_statistics(corpus):
    documents, tok = corpus
    features = features_list(
        documents, tok, seed=7, max_seq_length=32, max_predictions_per_seq=20, dupe_factor=60
    )
    num_predictions = sum(int(f["masked_lm_weights"].sum()) for f in features)
    num_tokens = sum(int(f["input_mask"].sum()) for f in features)
    assert num_predictions > 5000
    assert abs(num_predictions / num_tokens - 0.15) < 0.01
    replaced = np.concatenate(
        [f["input_ids"][f["masked_lm_positions"][f["masked_lm_weights"] > 0]] for f in features]
    )
    labels = np.concatenate([f["masked_lm_ids"][f["masked_lm_weights"] > 0] for f in features])
    as_mask = np.mean(replaced == tok.mask_id)
    kept = np.mean(replaced == labels)
    random_token = 1.0 - as_mask - kept
    # 80% [MASK], 10% unchanged, 10% random (5 sigma of the binomial noise at this sample size).
    assert abs(as_mask - 0.8) < 0.03 and abs(kept - 0.1) < 0.025 and abs(random_token - 0.1) < 0.025
    # Random ids are drawn from the whole vocabulary.
    randoms = replaced[(replaced != tok.mask_id) & (replaced != labels)]
    assert len(np.unique(randoms)) > 0.5 * min(len(randoms), tok.vocab_size)
    # Half the pairs take B from another document (a few more: one-sentence chunks always do).
    is_random = np.mean([f["next_sentence_labels"] for f in features])
    assert 0.47 < is_random < 0.6


def test_whole_word_masking_masks_every_piece_of_a_word(wwm_corpus):
    documents, tok = wwm_corpus

    def partial_words(features):
        """How many masked words have some of their pieces unmasked."""
        count = 0
        for f in features:
            ids, length = restore(f)
            n = int(f["masked_lm_weights"].sum())
            masked = set(f["masked_lm_positions"][:n].tolist())
            assert n <= 6
            starts = [p for p in range(1, length - 1) if tok.word_starts_V[ids[p]]]
            for start, end in zip(starts, [*starts[1:], length - 1], strict=True):
                word = set(range(start, end)) - {
                    p for p in range(start, end) if ids[p] == tok.sep_id
                }
                count += 0 < len(word & masked) < len(word)
        return count

    options = dict(max_seq_length=40, max_predictions_per_seq=6, dupe_factor=4)
    assert partial_words(features_list(documents, tok, 11, whole_word_masking=True, **options)) == 0
    assert partial_words(features_list(documents, tok, 11, **options)) > 20


def test_whole_words_never_span_sep_nor_overshoot_the_budget(wwm_corpus):
    _, tok = wwm_corpus
    word, x, y, other = (tok.token_to_id(t) for t in ("d0s0w0", "##x", "##y", "d0s0w1"))
    # [CLS] word ##x [SEP] ##y other [SEP]: words {1, 2}, {4}, {5}; a budget of one prediction
    # never takes the two-piece word and never joins ##y (after [SEP]) to it.
    input_ids = [tok.cls_id, word, x, tok.sep_id, y, other, tok.sep_id]
    options = bp.PretrainingOptions(
        max_predictions_per_seq=1, masked_lm_prob=1.0, whole_word_masking=True
    )
    chosen = set()
    for seed in range(40):
        _, positions, labels = bp.create_masked_lm_predictions(
            input_ids, tok, options, random.Random(seed)
        )
        assert len(positions) == 1 and labels == [input_ids[positions[0]]]
        chosen.add(positions[0])
    assert chosen == {4, 5}


def test_truncate_seq_pair_trims_the_longer_segment_at_either_end():
    rng = random.Random(0)
    fronts = backs = 0
    for _ in range(200):
        a, b = list(range(10)), list(range(100, 104))
        bp.truncate_seq_pair(a, b, 9, rng)
        assert len(a) == 5 and b == [100, 101, 102, 103]
        assert a == list(range(a[0], a[0] + 5))  # only ends were removed
        fronts += a[0] > 0
        backs += a[-1] < 9
    assert fronts > 50 and backs > 50
    a, b = [1, 2, 3], [4, 5, 6]
    bp.truncate_seq_pair(a, b, 5, random.Random(0))
    assert len(a) == 3 and len(b) == 2  # ties shorten B


def test_deterministic_for_a_seed_and_different_across_seeds(corpus):
    documents, tok = corpus
    first, again, other = (features_list(documents, tok, seed) for seed in (1, 1, 2))

    def stack(features):
        return {k: np.stack([f[k] for f in features]) for k in features[0]}

    for name, value in stack(first).items():
        np.testing.assert_array_equal(value, stack(again)[name])
    assert len(first) != len(other) or any(
        not np.array_equal(a["input_ids"], b["input_ids"])
        for a, b in zip(first, other, strict=True)
    )


def test_eval_split_holds_out_whole_documents(corpus):
    documents, _ = corpus
    train, eval_ = bp.split_documents(documents, 0.25, seed=0)
    assert len(eval_) == 3 and len(train) == 9
    assert sorted(map(str, train + eval_)) == sorted(map(str, documents))
    assert bp.split_documents(documents, 0.25, seed=0) == (train, eval_)
    assert [len(split) for split in bp.split_documents(documents, 0.01, seed=0)] == [10, 2]
    assert [len(split) for split in bp.split_documents(documents[:3], 0.9, seed=0)] == [1, 2]
    with pytest.raises(ValueError, match="needs 3"):
        bp.split_documents(documents[:2], 0.1, seed=0)


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(max_seq_length=4), "max_seq_length"),
        (dict(max_predictions_per_seq=0), "max_predictions_per_seq"),
        (dict(dupe_factor=0), "dupe_factor"),
        (dict(masked_lm_prob=0.0), "masked_lm_prob"),
        (dict(short_seq_prob=1.5), "short_seq_prob"),
    ],
)
def test_bad_options_raise(options, match):
    with pytest.raises(ValueError, match=match):
        bp.PretrainingOptions(**options)
