"""Bad input on the command line ends every script with one line, `<script>: error: ...`, and
status 2, before any data is prepared: flags, config files, config fields, presets, files."""

import pytest

from tests.experiments import scripts

PRETRAIN, TRANSLATE, FINETUNE = (
    f"experiments/{name}.py" for name in ("pretrain_bert", "translate", "finetune_bert")
)


def _error_line(script, overrides, *args):
    result = scripts.run(script, overrides, *args, status=2)
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"{script.rpartition('/')[2]}: error: ")
    return lines[0].partition(": error: ")[2]


@pytest.mark.parametrize(
    "script, args, expected",
    [
        (
            TRANSLATE,
            ["--config=experiments/configs/translate.py:lstm"],
            "translate config is 'transformer' or 'rnn', got 'lstm'",
        ),
        (
            TRANSLATE,
            ["--config=experiments/configs/nowhere.py"],
            "config file experiments/configs/nowhere.py not found",
        ),
        (
            PRETRAIN,
            ["--config.train.foo=1"],
            "--config.train.foo: unknown config field 'foo' in config.train; its fields: "
            "async_checkpointing, b1, b2,",
        ),
        (
            PRETRAIN,
            ["--config.train.num_train_steps=many"],
            "flag --config.train.num_train_steps=many: invalid literal for int()",
        ),
        (
            TRANSLATE,
            ["--config.model_size=huge"],
            "TransformerConfig has no preset 'huge'; presets: base, big, small, tiny",
        ),
        (
            TRANSLATE,
            ["--config.eval.average_checkpoints=6"],
            "eval.average_checkpoints=6 needs that many checkpoints kept and saved "
            "(train.keep_checkpoints=5, checkpoint_every_steps=200)",
        ),
    ],
    ids=["config-argument", "config-file", "field", "value", "preset", "average"],
)
def test_bad_flags_and_configs(script, args, expected):
    assert _error_line(script, {}, *args).startswith(expected)


def test_pretraining_with_an_unknown_model_size(tmp_path):
    message = _error_line(PRETRAIN, {"model_size": "huge", "data.output_dir": tmp_path})
    assert message.startswith("unknown BERT model size 'huge'")
    assert not any(tmp_path.iterdir())  # refused before preparing any data


def test_malformed_config_json_is_named(tmp_path):
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text('{"vocab_size": 30,')
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    message = _error_line(FINETUNE, {"init_from": folder, "train.workdir": tmp_path / "run"})
    assert message.startswith(f"{folder / 'config.json'}: not a BERT config.json")


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"train.num_train_steps": -5}, "training config num_train_steps=-5 must be a positive"),
        ({"train.grad_accum_steps": 3}, "batch_size=32 is not divisible by grad_accum_steps=3"),
        ({"data.corpus_dir": "/nowhere/corpus"}, "corpus /nowhere/corpus does not exist"),
    ],
    ids=["negative-steps", "accumulation", "missing-corpus"],
)
def test_bad_training_settings_fail_before_data_is_prepared(overrides, expected, tmp_path):
    message = _error_line(PRETRAIN, {**overrides, "data.output_dir": tmp_path / "data"})
    assert message.startswith(expected)
    assert not (tmp_path / "data").exists()


def test_an_empty_corpus_is_one_line(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "empty.txt").write_text("")
    overrides = {"data.corpus_dir": tmp_path / "corpus", "data.output_dir": tmp_path / "data"}
    assert _error_line(PRETRAIN, overrides) == (
        "no text to train SentencePiece on: 1 file(s), all empty"
    )


def test_an_unknown_flag_is_one_line():
    assert _error_line(TRANSLATE, {}, "--bogus") == "Unknown command line flag 'bogus'"
