"""Smoke test: one training step of `experiments/train_sase.py` on a small SST-2-like TSV, run as
a command, writes its results, the hop heatmaps, the highlighted text and TensorBoard events."""

import json

import numpy as np

from tests.experiments import scripts

WORDS = "a the film movie is was good bad dull witty great awful plot acting".split()


def test_one_step_writes_results_and_attention_plots(tmp_path):
    rng = np.random.default_rng(0)
    rows = [f"{i % 2}\t{' '.join(rng.choice(WORDS, rng.integers(3, 9)))} {i}" for i in range(120)]
    (tmp_path / "train.tsv").write_text("label\tsentence\n" + "\n".join(rows) + "\n")
    workdir = tmp_path / "run"
    overrides = {
        "model_size": "tiny",
        "data.train_file": str(tmp_path / "train.tsv"),
        "data.validation_size": 20,
        "eval.num_plots": 2,
        "eval.batch_size": 8,
        "train.workdir": str(workdir),
        "train.batch_size": 8,
        "train.num_train_steps": 1,
        "train.warmup_steps": 0,
        "train.eval_every_steps": 1,
        "train.checkpoint_every_steps": 1,
        "train.progress_bar": False,
    }
    result = scripts.run("experiments/train_sase.py", overrides)
    assert "accuracy" in result.stdout and "hop overlap" in result.stdout
    results = json.loads((workdir / "results.json").read_text())
    assert results["steps"] == 1 and results["eval_sentences"] == 20
    assert 0.0 <= results["accuracy"] <= 1.0 and 0.0 <= results["hop_overlap"] <= 1.0
    files = sorted(p.name for p in (workdir / "attention").iterdir())
    assert files == ["attention.html", "hops_0.png", "hops_1.png"]
    assert (workdir / "words.txt").read_text().startswith("[PAD]\n[UNK]\n")
    events = b"".join(p.read_bytes() for p in (workdir / "tensorboard").glob("events.out.*"))
    assert b"hops/0" in events and b"attention/1" in events

    bad = scripts.run("experiments/train_sase.py", {**overrides, "model_size": "huge"}, status=2)
    assert bad.stderr.strip().endswith(
        "model_size must be one of ('sst2', 'yelp', 'age', 'tiny'), got 'huge'"
    )
