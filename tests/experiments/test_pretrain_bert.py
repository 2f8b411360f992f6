"""End to end: a short `experiments/pretrain_bert.py` run, then the notebook on its checkpoint."""

import gzip
import itertools

import pytest

from tests.experiments import scripts
from tests.experiments.scripts import ROOT


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrain")
    corpus = tmp / "corpus"
    corpus.mkdir()
    with gzip.open(ROOT / "corpora/web_bible/web.en.txt.gz", "rt") as f:
        (corpus / "part.txt").write_text("".join(itertools.islice(f, 3000)))
    workdir = tmp / "run"
    overrides = {
        "data.corpus_dir": corpus,
        "data.output_dir": tmp / "data",
        "data.vocab_size": 1000,
        "data.dupe_factor": 1,
        "train.workdir": workdir,
        "train.num_train_steps": 6,
        "train.batch_size": 8,
        "train.warmup_steps": 2,
        "train.eval_every_steps": 3,
        "train.num_eval_steps": 2,
        "train.log_every_steps": 3,
        "train.checkpoint_every_steps": 3,
        "train.progress_bar": False,
    }
    result = scripts.run("experiments/pretrain_bert.py", overrides)
    assert "masked-LM loss" in result.stdout and "unigram baseline" in result.stdout
    return workdir


def test_pretraining_writes_checkpoints_events_and_tokenizer(run_dir):
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == [
        "3",
        "6",
    ]
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert (run_dir / "spm.model").is_file()


def test_notebook_executes_against_the_checkpoint(run_dir, tmp_path):
    outputs = scripts.execute_notebook(
        "bert_attention.ipynb", tmp_path, {"ATTENTION_JAX_RUN": str(run_dir)}
    )
    assert sum(o.output_type == "display_data" for o in outputs) == 2
    assert (tmp_path / "bert_attention_heads.png").stat().st_size > 10_000
