"""Every experiment script is flags, wiring and printing around a task of the library."""

import pytest

from tests.experiments.scripts import ROOT

SCRIPTS = sorted((ROOT / "experiments").glob("*.py"))
assert SCRIPTS, "no experiment scripts found"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_script_is_short_and_holds_no_model_logic(script):
    source = script.read_text()
    assert len(source.splitlines()) <= 170
    assert "isinstance(" not in source  # dispatch on model classes belongs to the tasks
    assert "def loss" not in source and "optax." not in source  # losses belong to the tasks
    # One-line errors for bad flags and inputs, preemption as exit status 0.
    assert "cli.config_flag(" in source and "cli.run(main" in source
