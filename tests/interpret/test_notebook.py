"""notebooks/interpret.ipynb runs end to end on the tiny models it trains itself."""

from tests.experiments import scripts


def test_interpret_notebook_executes(tmp_path):
    outputs = scripts.execute_notebook("interpret.ipynb", tmp_path)
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    # The model solves the task, and integrated gradients find the cue word and add up.
    assert "held-out accuracy 1.000" in text
    for line in text.splitlines():
        if line.startswith(("attention rollout", "|integrated gradients|")):
            assert int(line.split("first in ")[1].split("%")[0]) >= 90, line
    gap = float(text.split("largest completeness gap ")[1].split()[0])
    assert gap < 1e-3
    for name in ("tau", "permutation", "pruning"):
        assert (tmp_path / f"interpret_{name}.png").stat().st_size > 5_000
    assert "rollout" in (tmp_path / "interpret_sentences.html").read_text()
