"""Simulated 8-device meshes, pmap and two gloo processes all match single-device training."""

import socket
import sys

import numpy as np
import pytest

from tests.training import tiny_runs

# Only compared to 1e-5, so these processes can skip XLA's slow LLVM optimisations.
FAST_COMPILE = {"XLA_FLAGS": "--xla_backend_optimization_level=0"}

LOAD_SCRIPT = """
import sys
import jax
import numpy as np
from attention_jax import checkpoint
from tests.training import tiny_classifier, tiny_runs
restored = checkpoint.load(sys.argv[1])
assert jax.device_count() == 1
assert all(len(x.sharding.device_set) == 1 for x in jax.tree.leaves(restored.params))
batch = tiny_classifier.global_batch(0, 4)
logits = restored.model.apply({"params": restored.params}, batch["ids"])
np.savez(sys.argv[2], logits=logits, step=restored.step, **tiny_runs.flat_params(restored.params))
"""

MESHES = {
    "data": {"mesh": {"data": 8}},
    "fsdp": {"mesh": {"data": 1, "fsdp": 8}, "checkpoint_every_steps": 3},
    "data_tensor": {"mesh": {"data": 4, "tensor": 2}},
    "pmap": {"parallelism": "pmap"},
}
BAD = {
    "mesh_not_matching_devices": ({"mesh": {"data": 3}}, "has 3 devices but 8 are available"),
    "batch_not_divisible_by_data": ({"batch_size": 12}, "12 is not divisible by the 8 batch"),
    "micro_batch_not_divisible": ({"grad_accum_steps": 4}, "4 is not divisible by the 8 batch"),
}


def _assert_close(path, expected):
    actual = dict(np.load(path))
    assert actual.keys() >= expected.keys()
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], atol=1e-5, rtol=0, err_msg=name)
    return actual


def test_eight_simulated_devices(reference, tmp_path):
    """One 8-device process trains under every mesh in MESHES and tries every config in BAD;
    a fresh 1-CPU process then loads the FSDP run's checkpoint.

    One test rather than several so that pytest-xdist cannot start the 8-device process twice.
    """
    specs = [
        {"config": {"workdir": str(tmp_path / name), **overrides}, "out": str(tmp_path / name)}
        for name, overrides in [*MESHES.items(), *((n, o) for n, (o, _) in BAD.items())]
    ]
    tiny_runs.python(tiny_runs.jobs(*specs), devices=8, env=FAST_COMPILE)
    for name in MESHES:
        _assert_close(tmp_path / f"{name}.npz", reference[1])
    for name, (_, expected) in BAD.items():
        message = (tmp_path / f"{name}.error").read_text()
        assert expected in message and "\n" not in message, (name, message)

    loaded_path = tmp_path / "loaded.npz"
    tiny_runs.python(["-c", LOAD_SCRIPT, tmp_path / "fsdp", loaded_path], devices=1)
    loaded = _assert_close(loaded_path, reference[1])
    assert int(loaded["step"]) == 6
    trained = dict(np.load(tmp_path / "fsdp.npz"))
    for name in trained:
        np.testing.assert_array_equal(loaded[name], trained[name], err_msg=name)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(sys.platform != "linux", reason="gloo CPU collectives")
def test_two_processes_match_one(reference, tmp_path):
    """Two processes with 2 CPU devices each (mesh data=2 × fsdp=2), checkpointing together."""
    spec = {
        "config": {
            "workdir": str(tmp_path),
            "mesh": {"data": 2, "fsdp": 2},
            "multihost": True,
            "checkpoint_every_steps": 3,
        },
        "out": str(tmp_path / "params"),
    }
    address = f"localhost:{_free_port()}"
    processes = [
        tiny_runs.python(
            tiny_runs.jobs(spec),
            devices=2,
            env={**FAST_COMPILE, "TINY_COORDINATOR": f"{address},2,{i}"},
            wait=False,
        )
        for i in range(2)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-4000:]
    _assert_close(tmp_path / "params.npz", reference[1])
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [
        "3",
        "6",
    ]
