"""SIGTERM saves and exits 0; kill -9 loses nothing but time; resumed runs are bitwise equal."""

import random
import signal
import time

import numpy as np

from tests.training import tiny_runs

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


def test_sigterm_then_kill9_then_resume_is_bitwise_equal(reference, xla_cache, tmp_path):
    spec = {
        "config": {"workdir": str(tmp_path), "checkpoint_every_steps": 2},
        "out": str(tmp_path / "params"),
        "sleep": SECONDS_PER_BATCH,
    }

    def start():
        return tiny_runs.python(tiny_runs.jobs(spec), xla_cache=xla_cache, wait=False)

    # 1. SIGTERM once step 2 is saved: the run checkpoints where it is and exits 0.
    first = start()
    _wait_for_checkpoint(tmp_path, first, newer_than=0)
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr[-4000:]
    preempted_at = max(_steps(tmp_path))
    assert 2 < preempted_at < 6, (preempted_at, stderr[-2000:])
    assert not (tmp_path / "params.npz").exists()

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
