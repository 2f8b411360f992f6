"""End to end: a short `experiments/pretrain_gpt.py` run, `experiments/generate.py` on its
checkpoint, and the notebook executed against it."""

import gzip
import itertools
import json

import pytest

from tests.experiments import scripts
from tests.experiments.scripts import ROOT


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrain_gpt")
    corpus = tmp / "corpus.txt"
    with gzip.open(ROOT / "corpora/web_bible/web.en.txt.gz", "rt") as f:
        corpus.write_text("".join(itertools.islice(f, 1500)))
    workdir = tmp / "run"
    overrides = {
        "data.corpus_dir": corpus,
        "data.output_dir": tmp / "tokenizer",
        "data.vocab_size": 500,
        "data.seq_len": 32,
        "model_overrides.position": "rope",
        "model_overrides.max_len": 64,
        "eval_context_multiples": "(1, 2)",
        "train.workdir": workdir,
        "train.num_train_steps": 6,
        "train.batch_size": 8,
        "train.warmup_steps": 2,
        "train.eval_every_steps": 3,
        "train.log_every_steps": 3,
        "train.checkpoint_every_steps": 3,
        "train.progress_bar": False,
    }
    result = scripts.run(
        "experiments/pretrain_gpt.py",
        overrides,
        "--config=experiments/configs/gpt_pretrain.py:tiny",
    )
    for line in ("before training", "after training", "unigram baseline", "bigram (KN)"):
        assert line in result.stdout
    assert "context    64" in result.stdout
    return workdir


def test_pretraining_writes_checkpoints_events_tokenizer_and_results(run_dir):
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == [
        "3",
        "6",
    ]
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert (run_dir / "spm.model").is_file()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"] == 6 and set(results["contexts"]) == {"32", "64"}
    per_token, per_word = results["contexts"]["32"]
    assert 1.0 < per_token < per_word  # a word is one or more tokens


def test_generate_continues_the_prompt(run_dir):
    result = scripts.run(
        "experiments/generate.py",
        {"run": run_dir, "prompt": "And God said", "num_samples": 2, "max_new_tokens": 5},
    )
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and all(
        line.startswith(("[1] And God said", "[2] And God said")) for line in lines
    )


def test_few_shot_scores_the_run_on_held_out_chapters_and_task_files(run_dir, tmp_path):
    choices = {"context": "And God said,", "choices": ["Let there be light", "Amen"], "gold": 0}
    (tmp_path / "light.jsonl").write_text(json.dumps(choices) + "\n" + json.dumps(choices) + "\n")
    overrides = {
        "run": run_dir,
        "tasks": "('last_word',)",
        "task_files": f"('{tmp_path / 'light.jsonl'}',)",
        "ks": "(0, 1)",
        "num_examples": 6,
        "data.corpus_dir": run_dir.parent / "corpus.txt",
        "output_dir": tmp_path,
    }
    result = scripts.run("experiments/few_shot.py", overrides)
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["shots"] for r in results["light"]] == [0.0, 1.0]
    assert all(0.0 <= r["acc_unconditional"] <= 1.0 for r in results["light"])
    assert "exact_match" in results["last_word"][1] and "last_word     1" in result.stdout
    assert (tmp_path / "accuracy_vs_k.png").stat().st_size > 0
    assert len((tmp_path / "tasks" / "last_word.jsonl").read_text().splitlines()) == 7


def test_generate_refuses_a_run_without_checkpoints(tmp_path):
    result = scripts.run("experiments/generate.py", {"run": tmp_path}, status=2)
    assert result.stderr.count("\n") == 1 and "error:" in result.stderr


def test_notebook_executes_against_the_checkpoint(run_dir, tmp_path):
    outputs = scripts.execute_notebook(
        "gpt_language_model.ipynb", tmp_path, {"ATTENTION_JAX_RUN": str(run_dir)}
    )
    assert sum(o.output_type == "display_data" for o in outputs) == 1
    assert (tmp_path / "gpt_attention_heads.png").stat().st_size > 10_000
