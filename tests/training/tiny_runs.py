"""Tiny-classifier trainings in subprocesses (simulated devices, several processes, signals).

As a script: `python tiny_runs.py JOBS_JSON`, JOBS_JSON a list of
{"config": {overrides of tiny_classifier.config, incl. workdir}, "out": path without suffix,
 "sleep": seconds per batch}. Each job saves its final params to "<out>.npz" (process 0), or, if
the config is rejected, the one-line ValueError to "<out>.error". A run stopped by SIGTERM
(`training.Preempted`) exits with status 0 after its checkpoint, as scripts do. With env
TINY_COORDINATOR="host:port,num_processes,process_id" the process joins a multi-process run
with gloo CPU collectives.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
from flax import traverse_util

HERE = Path(__file__).parent
REPO = HERE.parent.parent


def flat_params(params) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


def python(args, *, devices=1, xla_cache=None, env=None, wait=True):
    """Runs (or, with wait=False, starts) `python args...` in the repository root, with `tests`
    importable and `devices` simulated CPU devices; a finished run that fails raises."""
    full_env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "JAX_PLATFORMS": "cpu",
        "JAX_NUM_CPU_DEVICES": str(devices),
        **(env or {}),
    }
    if xla_cache:
        full_env.update(
            JAX_COMPILATION_CACHE_DIR=xla_cache,
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        )
    command = [sys.executable, *map(str, args)]
    process = subprocess.Popen(
        command, env=full_env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    if not wait:
        return process
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise AssertionError(f"{command} exited {process.returncode}:\n{stderr[-4000:]}")
    return stdout


def jobs(*specs) -> list[str]:
    """Command-line arguments running `specs` through this file's main()."""
    return [HERE / "tiny_runs.py", json.dumps(list(specs))]


def main(specs):
    from jax.experimental import multihost_utils

    from tests.training import tiny_classifier

    for spec in specs:
        config = tiny_classifier.config(**spec["config"])
        try:
            state = tiny_classifier.run(config, sleep=spec.get("sleep", 0.0))
        except ValueError as error:
            Path(f"{spec['out']}.error").write_text(str(error))
            continue
        params = state.params
        if config.parallelism == "pmap":
            params = jax.tree.map(lambda x: x[0], params)
        params = multihost_utils.process_allgather(params, tiled=True)
        if jax.process_index() == 0:
            np.savez(f"{spec['out']}.npz", **flat_params(params))


if __name__ == "__main__":
    jax.config.update("jax_default_matmul_precision", "highest")
    if "TINY_COORDINATOR" in os.environ:
        address, num_processes, process_id = os.environ["TINY_COORDINATOR"].split(",")
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(address, int(num_processes), int(process_id))
    from attention_jax import training

    try:
        main(json.loads(sys.argv[1]))
    except training.Preempted as stop:
        print(stop, file=sys.stderr)
        sys.exit(0)
