"""`experiments/interpret.py` as a command: a missing run ends in one line and status 2, before
any data is prepared (the measurements themselves are the library's, tested beside this)."""

from tests.experiments import scripts


def test_a_missing_run_is_one_line():
    runs = [
        f"--config.runs.{name}=/nowhere" for name in ("rnn_none", "rnn_bahdanau", "transformer")
    ]
    result = scripts.run(
        "experiments/interpret.py",
        {},
        "--config=experiments/configs/interpret.py:translation",
        *runs,
        status=2,
    )
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr[-2000:]
    assert lines[0] == "interpret.py: error: no checkpoint in /nowhere"
