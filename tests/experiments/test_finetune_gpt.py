"""End to end: `experiments/finetune_gpt.py`'s 2×2 ablation, two steps a run, from a tiny GPT
pre-trained here for one step; the pre-trained runs start from exactly its weights."""

import json

import numpy as np
import pytest
from flax import traverse_util

from attention_jax import checkpoint, training
from attention_jax.data import batching, tokenizers
from attention_jax.data import language_model as lm_data
from attention_jax.tasks import language_model
from tests.data.sst import SST_ROWS
from tests.experiments import scripts


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    """A one-step GPT run (1 block, D = 16) with its spm.model, as `make pretrain-gpt` writes."""
    tmp = tmp_path_factory.mktemp("gpt")
    text = tmp / "text.txt"
    text.write_text("".join(f"{x}\n" for _, x in SST_ROWS))
    tokenizer = tokenizers.train_sentencepiece([text], tmp / "run", 120)
    rows = lm_data.pack_documents(
        [lm_data.frame(tokenizer.encode(x), tokenizer) for _, x in SST_ROWS], 16
    )
    config = training.default_config()
    config.update(
        workdir=str(tmp / "run"), num_train_steps=1, batch_size=4, checkpoint_every_steps=1
    )
    config.progress_bar = False
    overrides = dict(num_layers=1, d_model=16, num_heads=2, d_ff=32, max_len=32)
    task = language_model.create("tiny", tokenizer.vocab_size, config, overrides)
    training.train(config, task, batching.pretraining_batches(batching.ArraySource(rows), 4, 0))
    return tmp / "run"


def _flat(params):
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


def test_ablation_runs_the_four_fine_tunings(pretrained_run, tmp_path):
    tsv = tmp_path / "train.tsv"
    tsv.write_text("label\tsentence\n" + "".join(f"{y}\t{x}\n" for y, x in SST_ROWS))
    workdir = tmp_path / "ablation"
    overrides = {
        "run": pretrained_run,
        "data.train_file": tsv,
        "data.validation_size": 4,
        "data.max_len": 16,  # one bucket: one compiled train step a run
        "eval_batch_size": 4,
        "train.workdir": workdir,
        "train.num_train_steps": 2,
        "train.warmup_steps": 1,  # the first update has learning rate 0
        "train.batch_size": 4,
        "train.checkpoint_every_steps": 1,
        "train.keep_checkpoints": 2,
        "train.progress_bar": False,
    }
    config = "--config=experiments/configs/gpt_finetune.py:ablation"
    result = scripts.run("experiments/finetune_gpt.py", overrides, config)
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert table[0] == "| start | λ | accuracy | LM loss L1 | training time | wall time |"
    assert [line.split(" | ")[:2] for line in table[1:]] == [
        ["| pre-trained", "0.5"],
        ["| pre-trained", "0"],
        ["| random init", "0.5"],
        ["| random init", "0"],
    ]

    pretrained = _flat(checkpoint.load(pretrained_run).params)
    for name, from_scratch, lm_coef in [
        ("pretrained_lm0.5", False, 0.5),
        ("pretrained_lm0", False, 0.0),
        ("scratch_lm0.5", True, 0.5),
        ("scratch_lm0", True, 0.0),
    ]:
        run = workdir / name
        results = json.loads((run / "results.json").read_text())
        assert (results["from_scratch"], results["lm_coef"]) == (from_scratch, lm_coef)
        assert results["eval_rows"] == 4 and results["train_steps"] == 2
        assert results["metrics"]["accuracy"] in (0.0, 0.25, 0.5, 0.75, 1.0)
        assert 0.0 < results["metrics"]["lm_nll"] < 10.0  # ln 120 = 4.8 for a uniform guess
        assert (run / "spm.model").read_bytes() == (pretrained_run / "spm.model").read_bytes()
        at_start = _flat(checkpoint.load(run, step=1).params["gpt"])
        assert at_start.keys() == pretrained.keys()
        same = [np.array_equal(at_start[k], v) for k, v in pretrained.items()]
        assert all(same) if not from_scratch else not any(same)


def test_bad_input_is_one_line_error(tmp_path):
    result = scripts.run(
        "experiments/finetune_gpt.py",
        {"run": tmp_path / "nowhere", "train.workdir": tmp_path / "run"},
        status=2,
    )
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"finetune_gpt.py: error: no checkpoint in {tmp_path / 'nowhere'}"
    )
