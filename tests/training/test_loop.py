"""The single-device loop: gradient accumulation, evaluation, resume, checkpoint fallback, NaNs."""

import logging
import shutil

import numpy as np
import pytest
from flax import traverse_util

from attention_jax import checkpoint
from tests.training import tiny_classifier, tiny_runs

EVAL_ROWS = 16


def _eval_data():
    return [tiny_classifier.global_batch(10_000 + i, EVAL_ROWS) for i in range(2)]


def _assert_params_equal(actual, expected, atol=0.0):
    assert actual.keys() == expected.keys()
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=0, atol=atol, err_msg=name)


@pytest.fixture(scope="module")
def accumulated(xla_cache, tmp_path_factory):
    """The reference run's config with 4 micro-batches per step, evaluation every 2 steps and
    keep_checkpoints=1 plus the best by eval loss."""
    workdir = tmp_path_factory.mktemp("accumulated")
    config = tiny_classifier.config(
        workdir,
        grad_accum_steps=4,
        eval_every_steps=2,
        checkpoint_every_steps=2,
        keep_checkpoints=1,
        best_metric="loss",
        best_mode="min",
    )
    state = tiny_classifier.run(config, eval_data=_eval_data)
    return workdir, tiny_runs.flat_params(state.params)


def test_grad_accumulation_matches_one_large_batch(reference, accumulated):
    _assert_params_equal(accumulated[1], reference[1], atol=1e-5)


def test_eval_metrics_tensorboard_and_best_checkpoint(accumulated, reference):
    workdir, params = accumulated
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    # keep_checkpoints=1 keeps the newest (6) and the best by eval loss: step 2 (eval losses at
    # steps 2, 4, 6 are 1.15, 1.36, 1.29 on this fixed data), not step 4.
    assert steps == [2, 6]
    restored = checkpoint.load(workdir)
    assert restored.step == 6 and restored.config.grad_accum_steps == 4
    _assert_params_equal(tiny_runs.flat_params(restored.params), params)
    logits = restored.model.apply({"params": restored.params}, _eval_data()[0]["ids"])
    assert logits.shape == (EVAL_ROWS, 3) and np.all(np.isfinite(logits))


def test_truncated_newest_checkpoint_falls_back_and_resumes_bitwise(reference, tmp_path, caplog):
    reference_dir, expected = reference
    workdir = tmp_path / "run"
    shutil.copytree(reference_dir, workdir)
    for path in (workdir / "checkpoints" / "6" / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="attention_jax.training"):
        state = tiny_classifier.run(tiny_classifier.config(workdir, checkpoint_every_steps=2))
    messages = [r.getMessage() for r in caplog.records]
    assert any("checkpoints/6 failed to restore" in m for m in messages), messages
    assert any("at step 4" in m for m in messages), messages
    _assert_params_equal(tiny_runs.flat_params(state.params), expected)
    # The unreadable step 6 was replaced by the resumed run's.
    _assert_params_equal(tiny_runs.flat_params(checkpoint.load(workdir).params), expected)


def test_nan_halts_with_a_clear_message_and_keeps_the_last_checkpoint(reference, tmp_path):
    config = tiny_classifier.config(tmp_path, checkpoint_every_steps=2)
    # Global batch 4 feeds step 5.
    with pytest.raises(FloatingPointError, match="non-finite loss or gradient at step 5") as error:
        tiny_classifier.run(config, poison_batch=4)
    assert "\n" not in str(error.value)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [2, 4]
    at_4 = tiny_runs.flat_params(checkpoint.load(tmp_path).params)
    _assert_params_equal(at_4, tiny_runs.flat_params(checkpoint.load(reference[0], 4).params))


def test_nan_policy_skip_drops_the_update(tmp_path, caplog, xla_cache):
    config = tiny_classifier.config(tmp_path, nan_policy="skip")
    with caplog.at_level(logging.WARNING, logger="attention_jax.training"):
        state = tiny_classifier.run(config, poison_batch=4)
    assert int(state.step) == 6
    assert any("step 5" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)
    assert all(np.all(np.isfinite(v)) for v in tiny_runs.flat_params(state.params).values())


def _nested(name, value):
    return traverse_util.unflatten_dict({tuple(name.split("/")): value})


def test_init_params_replace_the_fresh_initialisation(tmp_path, xla_cache):
    """Warm start (fine-tuning from pretrained weights): with a zero learning rate the given
    leaf keeps its pretrained value and every other leaf its fresh initialisation."""

    def run(name, **kwargs):
        c = tiny_classifier.config(tmp_path / name, num_train_steps=1, learning_rate=0.0)
        return tiny_runs.flat_params(tiny_classifier.run(c, **kwargs).params)

    fresh = run("fresh")
    name = sorted(fresh)[0]
    pretrained = np.full(fresh[name].shape, 0.5, np.float32)
    warm = run("warm", init_params=_nested(name, pretrained))
    np.testing.assert_array_equal(warm[name], pretrained)
    del warm[name], fresh[name]
    _assert_params_equal(warm, fresh)
    with pytest.raises(ValueError, match="missing/kernel is not a parameter of the model"):
        run("bad_name", init_params=_nested("missing/kernel", pretrained))
    with pytest.raises(ValueError, match=f"{name} has shape"):
        run("bad_shape", init_params=_nested(name, pretrained[None]))


def test_average_is_the_mean_of_the_newest_checkpoints(reference):
    workdir = reference[0]
    averaged = checkpoint.average(workdir, last=2)
    assert averaged.step == 6 and averaged.averaged_steps == [4, 6]
    at_4, at_6 = (tiny_runs.flat_params(checkpoint.load(workdir, s).params) for s in (4, 6))
    expected = {name: (at_4[name].astype(np.float64) + at_6[name]) / 2 for name in at_6}
    _assert_params_equal(tiny_runs.flat_params(averaged.params), expected, atol=1e-7)
    assert checkpoint.load(workdir).averaged_steps == []
    with pytest.raises(ValueError, match=r"averaging 4 checkpoints .* it has \[2, 4, 6\]"):
        checkpoint.average(workdir, last=4)
