"""Running experiment scripts from tests, as a user runs them: as commands."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run(script, overrides: dict, *args, status=0) -> subprocess.CompletedProcess:
    """`python <script> *args --config.<key>=<value> ...` from the repository root; asserts
    that it exits with `status` (showing the end of stderr when not)."""
    result = subprocess.run(
        [sys.executable, script, *args] + [f"--config.{k}={v}" for k, v in overrides.items()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == status, result.stderr[-3000:]
    return result
