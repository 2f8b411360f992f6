"""Running experiment scripts from tests: import one as a module, or run it as a command."""

import importlib.util
import pathlib
import subprocess
import sys

from absl import flags

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load(path):
    """The script at `path` (relative to the repository root) imported as a module."""
    # Every script defines --config in absl's one global registry: drop the previous script's.
    if "config" in flags.FLAGS:
        delattr(flags.FLAGS, "config")
    path = ROOT / path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(script, overrides: dict, *args) -> subprocess.CompletedProcess:
    """`python <script> *args --config.<key>=<value> ...` from the repository root; asserts
    that it exits 0 (showing the end of stderr when not)."""
    result = subprocess.run(
        [sys.executable, script, *args] + [f"--config.{k}={v}" for k, v in overrides.items()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result
