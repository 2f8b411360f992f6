"""Running experiment scripts and notebooks from tests, as a user runs them."""

import os
import pathlib
import subprocess
import sys

import nbclient
import nbformat

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


def execute_notebook(name: str, workdir, env=None) -> list:
    """Executes notebooks/<name> in `workdir` with `env` added to its environment (e.g. the
    run to load, ATTENTION_JAX_RUN); asserts no cell failed and returns the code cells' outputs."""
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": workdir}}
    )
    client.execute(env={**os.environ, **(env or {})})
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs
