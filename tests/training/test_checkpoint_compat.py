"""Checkpoints written before the task layer still load: `checkpoint.load` rebuilds the models
from their saved configs (dropping `label_smoothing`, since moved to the translation task) and
gives the outputs that the code which wrote them computed (tests/fixtures/pre_task_layer)."""

import pathlib

import numpy as np
import pytest

from attention_jax import checkpoint

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "pre_task_layer"


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(FIXTURES / "expected.npz"))


@pytest.mark.parametrize("name", ["transformer", "rnn"])
def test_encoder_decoders_load_without_their_retired_loss_setting(name, expected):
    restored = checkpoint.load(FIXTURES / name)
    assert restored.step == 1 and not hasattr(restored.model.config, "label_smoothing")
    logits = restored.model.apply(
        {"params": restored.params}, expected["inputs"], expected["targets"][:, :-1]
    )
    np.testing.assert_allclose(logits, expected[name], rtol=1e-6, atol=1e-6)


def test_bert_classifier_loads(expected):
    restored = checkpoint.load(FIXTURES / "bert")
    logits = restored.model.apply({"params": restored.params}, expected["inputs"])
    np.testing.assert_allclose(logits, expected["bert"], rtol=1e-6, atol=1e-6)
