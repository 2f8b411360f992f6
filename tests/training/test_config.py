"""Bad training configs fail early with a one-line ValueError naming the problem; durations in
epochs resolve to steps as BERT's run_classifier.py counts them."""

import inspect
import re

import pytest

from attention_jax import training
from attention_jax.training import config as training_config
from tests.training import tiny_classifier


def _assert_one_line_error(config, match, run=False):
    with pytest.raises(ValueError, match=match) as error:
        tiny_classifier.run(config) if run else training.validate(config)
    assert "\n" not in str(error.value)


def test_default_config_is_valid_and_commented():
    default = training.default_config()
    training.validate(default)
    source = inspect.getsource(training_config.default_config)
    assignments = [line for line in source.splitlines() if re.match(r"\s+c(\.\w+)+ = ", line)]
    assert len(assignments) == len(default) + len(default.mesh)
    assert all("  # " in line for line in assignments), [a for a in assignments if "#" not in a]


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("optimizer", "adagrad", "optimizer='adagrad'"),
        ("schedule", "step", "schedule='step'"),
        ("nan_policy", "ignore", "nan_policy"),
        ("parallelism", "pjit", "parallelism"),
        ("batch_size", 0, "batch_size=0"),
        ("grad_accum_steps", 3, "not divisible by grad_accum_steps=3"),
        ("checkpoint_every_steps", -1, "checkpoint_every_steps"),
        ("num_train_steps", None, "needs num_train_steps or num_train_epochs; both are None"),
        ("warmup_steps", None, "needs warmup_steps or warmup_proportion; both are None"),
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
            tiny_classifier.task(),
            tiny_classifier.train_data(config.batch_size),
        )
    assert "\n" not in str(error.value)


def test_resolve_durations_from_epochs_and_warmup_proportion(tmp_path):
    config = tiny_classifier.config(
        tmp_path,
        num_train_steps=None,
        num_train_epochs=2.5,
        warmup_steps=None,
        warmup_proportion=0.1,
    )
    resolved = training.resolve_durations(config, num_train_examples=100)
    # int(100 / 16 · 2.5) = int(15.625) = 15 steps; int(15 · 0.1) = 1 warmup step.
    assert (resolved.num_train_steps, resolved.warmup_steps) == (15, 1)
    assert resolved.num_train_epochs == 2.5 and resolved.warmup_proportion == 0.1  # recorded
    training.validate(resolved)
    assert config.num_train_steps is None and config.num_train_epochs == 2.5  # a copy
    # At least one step: int(1 / 16 · 2.5) = 0 → 1, and int(1 · 0.1) = 0 warmup steps.
    few = training.resolve_durations(config, num_train_examples=1)
    assert (few.num_train_steps, few.warmup_steps) == (1, 0)
    # Given in steps: unchanged, epochs or not; a warmup proportion alone resolves against
    # num_train_steps=6.
    in_steps = tiny_classifier.config(tmp_path)
    assert training.resolve_durations(in_steps, 100).to_dict() == in_steps.to_dict()
    in_steps.num_train_epochs, in_steps.warmup_proportion = 9.0, 0.5
    assert training.resolve_durations(in_steps, 100).to_dict() == in_steps.to_dict()
    half = tiny_classifier.config(tmp_path, warmup_steps=None, warmup_proportion=0.5)
    assert training.resolve_durations(half, 100).warmup_steps == 3


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"num_train_steps": None, "num_train_epochs": 0.0}, "num_train_epochs=0.0 must be > 0"),
        ({"warmup_steps": None, "warmup_proportion": 1.5}, r"warmup_proportion=1.5 must be in"),
    ],
)
def test_bad_durations(tmp_path, overrides, match):
    _assert_one_line_error(tiny_classifier.config(tmp_path, **overrides), match)
    with pytest.raises(ValueError, match=match):
        training.resolve_durations(tiny_classifier.config(tmp_path, **overrides), 100)


def test_train_refuses_unresolved_durations(tmp_path):
    epochs = {"num_train_steps": None, "num_train_epochs": 1.0}
    config = tiny_classifier.config(tmp_path, **epochs)
    _assert_one_line_error(config, "num_train_steps unresolved.*resolve_durations", run=True)
    config = tiny_classifier.config(tmp_path, warmup_steps=None, warmup_proportion=0.1)
    match = r"warmup_steps unresolved \(None\): call training\.resolve_durations"
    _assert_one_line_error(config, match, run=True)
    with pytest.raises(ValueError, match="num_train_examples=0 must be positive"):
        training.resolve_durations(tiny_classifier.config(tmp_path, **epochs), 0)
