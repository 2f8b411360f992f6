"""A checkpoint's model spec rebuilds the model, also from configs of older model versions; a
checkpoint is data: names it holds are looked up among registered models, never imported."""

import dataclasses
import json
import logging
import pathlib
import re
import shutil
import subprocess
import sys
import time

import flax.linen as nn
import pytest

from attention_jax.models import bert
from attention_jax.training import checkpoint
from tests.training import tiny_classifier


def _saved_spec(config):
    """The model spec as a checkpoint holds it (through JSON)."""
    spec = checkpoint.model_spec(tiny_classifier.TinyClassifier(config))
    return json.loads(json.dumps(spec))


def test_build_model_round_trip():
    config = tiny_classifier.TinyConfig(num_classes=5, mlp_dim=12)
    model = checkpoint.build_model(_saved_spec(config))
    assert type(model) is tiny_classifier.TinyClassifier and model.config == config


def test_build_model_drops_retired_fields():
    config = tiny_classifier.TinyConfig(num_classes=5)
    spec = _saved_spec(config)
    spec["config"]["label_smoothing"] = 0.1  # in TinyConfig.RETIRED_FIELDS
    assert checkpoint.build_model(spec).config == config


def test_build_model_rejects_unknown_fields_in_one_line():
    spec = _saved_spec(tiny_classifier.TinyConfig())
    spec["config"]["dropout_rate"] = 0.1
    with pytest.raises(ValueError, match="tests.training.tiny_classifier.TinyConfig") as error:
        checkpoint.build_model(spec)
    assert "'dropout_rate'" in str(error.value) and "\n" not in str(error.value)


def test_build_model_rejects_wrongly_typed_and_missing_fields():
    spec = _saved_spec(tiny_classifier.TinyConfig())
    for value in ("16", 16.0, True, None, [16]):
        spec["config"]["embed_dim"] = value
        with pytest.raises(ValueError, match=r"TinyConfig\.embed_dim = .* is not of type int"):
            checkpoint.build_model(spec)
    del spec["config"]["embed_dim"]
    assert checkpoint.build_model(spec).config == tiny_classifier.TinyConfig()  # the default
    spec = _saved_spec(bert.BertConfig(vocab_size=8))
    del spec["config"]["vocab_size"]
    spec["module"] = "attention_jax.models.bert.BertModel"
    with pytest.raises(ValueError, match=r"lacks field\(s\) \['vocab_size'\]"):
        checkpoint.build_model(spec)


def test_only_linen_modules_with_a_frozen_config_dataclass_register():
    @dataclasses.dataclass
    class Mutable:
        size: int = 1

    class WithMutableConfig(nn.Module):
        config: Mutable

    class WithDictConfig(nn.Module):
        config: dict

    for cls in (WithMutableConfig, WithDictConfig, subprocess.Popen, Mutable):
        with pytest.raises(ValueError, match="cannot be checkpointed|not a Linen module"):
            checkpoint.register(cls)
    assert not any(".test_" in path for path in checkpoint.registered_models())


def test_the_projects_own_models_need_no_registration():
    models = checkpoint.registered_models()
    for path in (
        "attention_jax.models.bert.BertForPreTraining",
        "attention_jax.models.transformer.Transformer",
        "attention_jax.models.seq2seq_rnn.Seq2SeqRNN",
    ):
        assert path in models
    assert all(
        path.startswith("attention_jax.models.") or path.startswith("tests.") for path in models
    )


# Crafted checkpoints: the pre-task-layer BERT fixture with its "model" entry replaced. Each
# would run `touch <marker>` if the names in it were imported and called.
FIXTURE = pathlib.Path(__file__).parents[1] / "fixtures" / "pre_task_layer" / "bert"
POPEN = "subprocess.Popen"


def _crafted(tmp_path, model):
    workdir = tmp_path / "crafted"
    shutil.copytree(FIXTURE, workdir)
    config_file = workdir / "checkpoints" / "1" / "config" / "metadata"
    description = json.loads(config_file.read_text())
    description["model"] = model(description["model"])
    config_file.write_text(json.dumps(description))
    return workdir, config_file


def _touch(marker):
    return {"args": ["touch", str(marker)]}


@pytest.mark.parametrize(
    "craft, message",
    [
        (lambda m, spec: {"module": POPEN, "config_class": POPEN, "config": _touch(m)}, POPEN),
        (lambda m, spec: {**spec, "module": "no_such_package.Model"}, "no_such_package.Model"),
        (lambda m, spec: {**spec, "config_class": POPEN, "config": _touch(m)}, "config class"),
        (lambda m, spec: {**spec, "config": {**spec["config"], "args": str(m)}}, "'args'"),
        (lambda m, spec: {**spec, "config": {**spec["config"], "num_layers": [str(m)]}}, "int"),
        (lambda m, spec: {**spec, "config": [str(m)]}, "not a JSON object"),
        (lambda m, spec: str(m), "needs 'module'"),
    ],
    ids=["stdlib-callable", "unknown-module", "stdlib-config", "extra", "type", "list", "str"],
)
def test_crafted_checkpoints_are_refused_and_run_nothing(tmp_path, craft, message):
    marker = tmp_path / "ran"
    workdir, config_file = _crafted(tmp_path, lambda spec: craft(marker, spec))
    with pytest.raises(ValueError) as error:
        checkpoint.load(workdir)
    assert str(error.value).startswith(f"{config_file}: ") and message in str(error.value)
    assert "\n" not in str(error.value)
    time.sleep(0.2)  # a spawned command would have touched the marker by now
    assert not marker.exists() and "no_such_package" not in sys.modules


def test_malformed_checkpoint_description_names_the_file(tmp_path):
    workdir, config_file = _crafted(tmp_path, lambda spec: spec)
    config_file.write_text('{"train": {}, "model": ')
    with pytest.raises(ValueError, match=f"^{re.escape(str(config_file))}: not a checkpoint"):
        checkpoint.load(workdir)


def test_load_logs_nothing(reference, caplog, capfd):
    """A checkpoint with every item (state, config, iterator data) loads without a warning."""
    assert (reference[0] / "checkpoints" / "6" / "data").is_dir()
    capfd.readouterr()
    with caplog.at_level(logging.INFO):
        restored = checkpoint.load(reference[0])
    assert restored.step == 6 and isinstance(restored.model, tiny_classifier.TinyClassifier)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert capfd.readouterr().err == ""


def test_a_checkpoint_never_imports_what_it_names(tmp_path, monkeypatch):
    """A module on sys.path that runs a command on import (the old `build_model` imported the
    config class's module, then called the class) is never imported."""
    marker = tmp_path / "ran"
    payload = tmp_path / "payload_module"
    payload.mkdir()
    (payload / "aj_payload.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "import dataclasses\n\n@dataclasses.dataclass(frozen=True)\nclass Config:\n"
        "    size: int = 1\n"
    )
    monkeypatch.syspath_prepend(str(payload))
    workdir, config_file = _crafted(
        tmp_path,
        lambda spec: {**spec, "module": "aj_payload.Model", "config_class": "aj_payload.Config"},
    )
    with pytest.raises(ValueError, match="'aj_payload.Model' is not registered"):
        checkpoint.load(workdir)
    assert not marker.exists() and "aj_payload" not in sys.modules
