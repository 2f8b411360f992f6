"""SIGTERM saves and raises `Preempted` (scripts exit 0); kill -9 loses nothing but time;
resumed runs are bitwise equal."""

import os
import random
import signal
import threading
import time

import numpy as np
import pytest

from attention_jax import checkpoint, training
from attention_jax.training import loop
from tests.training import tiny_classifier, tiny_runs

SECONDS_PER_BATCH = 0.5


def _steps(workdir):
    directory = workdir / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _wait_for_checkpoint(workdir, process, newer_than):
    """Polls until a finished checkpoint newer than `newer_than` exists."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, stderr = process.communicate()
            raise AssertionError(f"run ended early ({process.returncode}):\n{stderr[-4000:]}")
        if (workdir / "checkpoints").is_dir() and any(s > newer_than for s in _steps(workdir)):
            return max(_steps(workdir))
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


class _SigtermAt:
    """The training data, sending this process SIGTERM as it hands out batch `index`."""

    def __init__(self, iterator, index, previous_handler):
        self.iterator, self.index, self.previous_handler = iterator, index, previous_handler
        self.taken = 0

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.iterator)
        if self.taken == self.index:
            # Without the loop's handler the signal would end the test process.
            assert signal.getsignal(signal.SIGTERM) is not self.previous_handler
            os.kill(os.getpid(), signal.SIGTERM)
        self.taken += 1
        return batch

    def get_state(self):
        return self.iterator.get_state()

    def set_state(self, state):
        self.iterator.set_state(state)


def test_sigterm_raises_preempted_after_saving_and_closes_once(
    reference, xla_cache, tmp_path, monkeypatch
):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are installed from the main thread only")
    closes = []
    close = loop._Loop.close
    monkeypatch.setattr(loop._Loop, "close", lambda self: (closes.append(1), close(self)))
    previous = signal.getsignal(signal.SIGTERM)
    # Saves only at the end (step 6) unless preempted; batch 3 feeds step 4.
    config = tiny_classifier.config(tmp_path, checkpoint_every_steps=100)
    data = _SigtermAt(tiny_classifier.train_data(config.batch_size), 3, previous)
    with pytest.raises(training.Preempted) as stop:
        tiny_classifier.run(config, data=data)
    assert stop.value.step == 4
    assert str(stop.value) == "SIGTERM: saved a checkpoint at step 4"
    assert closes == [1]
    assert signal.getsignal(signal.SIGTERM) is previous
    assert _steps(tmp_path) == [4]
    saved = tiny_runs.flat_params(checkpoint.load(tmp_path).params)
    expected = tiny_runs.flat_params(checkpoint.load(reference[0], 4).params)
    assert saved.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(saved[name], expected[name], err_msg=name)


def test_sigterm_then_kill9_then_resume_is_bitwise_equal(reference, xla_cache, tmp_path):
    spec = {
        "config": {"workdir": str(tmp_path), "checkpoint_every_steps": 2},
        "out": str(tmp_path / "params"),
        "sleep": SECONDS_PER_BATCH,
    }

    def start():
        return tiny_runs.python(tiny_runs.jobs(spec), xla_cache=xla_cache, wait=False)

    # 1. SIGTERM once step 2 is saved: the run checkpoints where it is, raises Preempted, and the
    # script catches it and exits 0.
    first = start()
    _wait_for_checkpoint(tmp_path, first, newer_than=0)
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr[-4000:]
    preempted_at = max(_steps(tmp_path))
    assert 2 < preempted_at < 6, (preempted_at, stderr[-2000:])
    assert not (tmp_path / "params.npz").exists()
    assert f"SIGTERM: saved a checkpoint at step {preempted_at}" in stderr, stderr[-2000:]

    # 2. Restart, which resumes from it; kill -9 at a random point after its next checkpoint.
    second = start()
    _wait_for_checkpoint(tmp_path, second, newer_than=preempted_at)
    time.sleep(random.uniform(0.0, 1.5 * SECONDS_PER_BATCH))
    second.kill()
    second.communicate(timeout=60)
    assert second.returncode == -signal.SIGKILL, "the run finished before it could be killed"

    # 3. Restart again and finish: the same parameters, bit for bit, as the uninterrupted run.
    third = start()
    _, stderr = third.communicate(timeout=240)
    assert third.returncode == 0, stderr[-4000:]
    params = dict(np.load(tmp_path / "params.npz"))
    assert params.keys() == reference[1].keys()
    for name, expected in reference[1].items():
        np.testing.assert_array_equal(params[name], expected, err_msg=name)
