"""The classifier helpers: word masks and trimmed features (the explanations themselves run in
tests/interpret/test_notebook.py, on a model trained to a known answer)."""

import numpy as np

from attention_jax.interpret import classifier
from tests.interpret.conftest import CLS, SEP, bert_batch


def test_word_mask_keeps_real_tokens_other_than_cls_and_sep():
    batch = bert_batch(np.random.default_rng(0))
    mask = classifier.word_mask(batch["input_ids"], batch["input_mask"], (CLS, SEP))
    expected = (batch["input_ids"] > SEP) & (batch["input_mask"] == 1)
    np.testing.assert_array_equal(mask, expected)


def test_trimmed_features_give_the_same_outputs(bert_classifier):
    task, params = bert_classifier
    features = bert_batch(np.random.default_rng(1), B=4, T=14)
    trimmed = classifier.trim(features)
    assert trimmed["input_ids"].shape[1] == features["input_mask"].sum(1).max() < 14
    np.testing.assert_array_equal(trimmed["label"], features["label"])
    np.testing.assert_allclose(
        task.predict(params, trimmed, 4), task.predict(params, features, 4), atol=1e-5
    )
