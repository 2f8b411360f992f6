"""Fixtures for the training-loop tests: a shared XLA compilation cache and a reference run.

Compiling the tiny model's step dominates these tests on CPU; the persistent cache lets every
run of the same program (here and in subprocesses) compile it once.
"""

import jax
import pytest

from tests.training import tiny_classifier, tiny_runs


@pytest.fixture(scope="session")
def xla_cache(request):
    cache = str(request.config.cache.mkdir("attention_jax_xla_cache"))
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return cache


@pytest.fixture(scope="session")
def reference(xla_cache, tmp_path_factory):
    """(workdir, flat params) of an uninterrupted 6-step single-device run with checkpoints at
    steps 2, 4 and 6."""
    workdir = tmp_path_factory.mktemp("reference")
    state = tiny_classifier.run(tiny_classifier.config(workdir, checkpoint_every_steps=2))
    return workdir, tiny_runs.flat_params(state.params)
