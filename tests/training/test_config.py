"""Bad training configs fail early with a one-line ValueError naming the problem."""

import pytest

from attention_jax import training
from tests.training import tiny_classifier


def _assert_one_line_error(config, match, run=False):
    with pytest.raises(ValueError, match=match) as error:
        tiny_classifier.run(config) if run else training.validate(config)
    assert "\n" not in str(error.value)


def test_default_config_is_valid_and_commented():
    training.validate(training.default_config())


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("optimizer", "sgd", "optimizer='sgd'"),
        ("schedule", "step", "schedule='step'"),
        ("nan_policy", "ignore", "nan_policy"),
        ("parallelism", "pjit", "parallelism"),
        ("batch_size", 0, "batch_size=0"),
        ("grad_accum_steps", 3, "not divisible by grad_accum_steps=3"),
        ("checkpoint_every_steps", -1, "checkpoint_every_steps"),
    ],
)
def test_bad_field_values(tmp_path, field, value, match):
    config = tiny_classifier.config(tmp_path)
    config[field] = value
    _assert_one_line_error(config, match)


def test_unknown_and_missing_fields(tmp_path):
    config = tiny_classifier.config(tmp_path)
    config.learning_rat = 1e-3
    _assert_one_line_error(config, r"unknown training config field\(s\) \['learning_rat'\]")
    config = tiny_classifier.config(tmp_path)
    del config["seed"]
    _assert_one_line_error(config, r"missing field\(s\) \['seed'\]")
    config = tiny_classifier.config(tmp_path)
    config.mesh.model = 2
    _assert_one_line_error(config, r"unknown mesh axes \['model'\]")


def test_bad_mesh_shapes(tmp_path):
    config = tiny_classifier.config(tmp_path, mesh={"data": -1, "fsdp": -1})
    _assert_one_line_error(config, "at most one -1")
    config = tiny_classifier.config(tmp_path, parallelism="pmap", mesh={"tensor": 2})
    _assert_one_line_error(config, "data parallel only")
    # One CPU device here; the 8-device cases run in test_distributed.py.
    config = tiny_classifier.config(tmp_path, mesh={"data": 2})
    _assert_one_line_error(config, "has 2 devices but 1 are available", run=True)


def test_batch_not_matching_batch_size(tmp_path):
    config = tiny_classifier.config(tmp_path)
    with pytest.raises(ValueError, match="has 16 rows on each of 1 process") as error:
        training.train(
            tiny_classifier.config(tmp_path, batch_size=32),
            tiny_classifier.TinyClassifier(tiny_classifier.TinyConfig()),
            tiny_classifier.loss_fn,
            tiny_classifier.train_data(config.batch_size),
            tiny_classifier.init_args,
        )
    assert "\n" not in str(error.value)
