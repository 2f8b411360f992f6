"""A checkpoint's model spec rebuilds the model, also from configs of older model versions."""

import json

import pytest

from attention_jax.training import checkpoint
from tests.training import tiny_classifier


def _saved_spec(config):
    """The model spec as a checkpoint holds it (through JSON)."""
    spec = checkpoint.model_spec(tiny_classifier.TinyClassifier(config))
    return json.loads(json.dumps(spec))


def test_build_model_round_trip():
    config = tiny_classifier.TinyConfig(num_classes=5, mlp_dim=12)
    model = checkpoint.build_model(_saved_spec(config))
    assert type(model) is tiny_classifier.TinyClassifier and model.config == config


def test_build_model_drops_retired_fields():
    config = tiny_classifier.TinyConfig(num_classes=5)
    spec = _saved_spec(config)
    spec["config"]["label_smoothing"] = 0.1  # in TinyConfig.RETIRED_FIELDS
    assert checkpoint.build_model(spec).config == config


def test_build_model_rejects_unknown_fields_in_one_line():
    spec = _saved_spec(tiny_classifier.TinyConfig())
    spec["config"]["dropout_rate"] = 0.1
    with pytest.raises(ValueError, match="tests.training.tiny_classifier.TinyConfig") as error:
        checkpoint.build_model(spec)
    assert "'dropout_rate'" in str(error.value) and "\n" not in str(error.value)
