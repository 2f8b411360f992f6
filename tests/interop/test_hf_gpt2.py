"""Hugging Face GPT-2 import/export against transformers' PyTorch GPT2LMHeadModel.

No pretrained GPT-2 weights are available offline, so the reference is a small GPT-2 that the
test draws at random (every weight, biases and LayerNorm parameters included, so that a wrong
mapping of any of them shows) and saves as transformers does.

B batch, T sequence length, V vocabulary size.
"""

import json
import shutil

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from attention_jax.interop import hf_gpt2, load_hf_gpt2, save_hf_gpt2
from attention_jax.models.gpt import GPT, GPTConfig
from attention_jax.tasks.language_model import LanguageModeling, generate

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

HF_CONFIG = dict(
    vocab_size=101,
    n_positions=32,
    n_embd=64,
    n_layer=2,
    n_head=4,
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
)
B, T = 3, 32


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**HF_CONFIG)).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # wte is lm_head: tied, drawn once
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


@pytest.fixture(scope="module")
def lm_dir(hf_model, tmp_path_factory):
    """A GPT2LMHeadModel folder: keys "transformer.h.0.…"."""
    path = tmp_path_factory.mktemp("gpt2_lm")
    hf_model.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def base_dir(hf_model, tmp_path_factory):
    """A GPT2Model folder: keys "h.0.…"."""
    path = tmp_path_factory.mktemp("gpt2_base")
    hf_model.transformer.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def tokens_BT():
    return np.random.default_rng(0).integers(0, HF_CONFIG["vocab_size"], (B, T))


def _torch_logits(model, tokens_BT):
    with torch.no_grad():
        return model(torch.from_numpy(tokens_BT)).logits.numpy()


@pytest.fixture(scope="module")
def hf_logits_BTV(hf_model, tokens_BT):
    return _torch_logits(hf_model, tokens_BT)


def test_config_maps_every_field(lm_dir):
    config, _ = load_hf_gpt2(lm_dir)
    assert config == GPTConfig(
        vocab_size=101,
        num_layers=2,
        d_model=64,
        num_heads=4,
        d_ff=256,
        max_len=32,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
    )
    assert hf_gpt2.config_from_hf({**HF_CONFIG, "n_inner": 96}).d_ff == 96
    assert hf_gpt2.config_from_hf({}) == GPTConfig.gpt2()  # absent keys: GPT2Config's defaults


@pytest.mark.parametrize(
    ("folder", "jit"), [("lm_dir", True), ("lm_dir", False), ("base_dir", True)]
)
def test_logits_match_pytorch(folder, jit, request, tokens_BT, hf_logits_BTV):
    config, params = load_hf_gpt2(request.getfixturevalue(folder))
    apply = GPT(config).apply
    logits_BTV = (jax.jit(apply) if jit else apply)({"params": params}, tokens_BT)
    np.testing.assert_allclose(logits_BTV, hf_logits_BTV, atol=1e-5, rtol=1e-5)


def test_greedy_generation_matches_pytorch(lm_dir, hf_model, tokens_BT):
    config, params = load_hf_gpt2(lm_dir)
    prompt_BP = tokens_BT[:, :8]
    ours_BL = generate(
        LanguageModeling(GPT(config)), params, prompt_BP, 12, eos_id=-1, method="greedy"
    )
    with torch.no_grad():
        theirs = hf_model.generate(
            torch.from_numpy(prompt_BP),
            attention_mask=torch.ones(prompt_BP.shape, dtype=torch.long),
            do_sample=False,
            max_new_tokens=12,
            min_new_tokens=12,
            pad_token_id=0,
        )
    np.testing.assert_array_equal(ours_BL, theirs.numpy()[:, 8:])


def test_export_loads_in_transformers_and_round_trips_exactly(lm_dir, tokens_BT, tmp_path):
    config, params = load_hf_gpt2(lm_dir)
    # Params of our own: every leaf drawn afresh, so the export is not a copy of what was read.
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(1)
    leaves = [rng.normal(0.0, 0.1, leaf.shape).astype(np.float32) for leaf in leaves]
    params = jax.tree.unflatten(treedef, leaves)
    save_hf_gpt2(config, params, tmp_path)
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ours_BTV = jax.jit(GPT(config).apply)({"params": params}, tokens_BT)
    np.testing.assert_allclose(_torch_logits(reloaded, tokens_BT), ours_BTV, atol=1e-5, rtol=1e-5)

    config_again, params_again = load_hf_gpt2(tmp_path)
    assert config_again == config
    assert jax.tree.structure(params_again) == treedef
    for a, b in zip(leaves, jax.tree.leaves(params_again), strict=True):
        np.testing.assert_array_equal(a, b)


def _folder_with(lm_dir, tmp_path, config_changes=None, tensors=None):
    """A copy of `lm_dir` with config.json keys changed and/or other tensors."""
    hf = json.loads((lm_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**hf, **(config_changes or {})}))
    if tensors is None:
        shutil.copy(lm_dir / "model.safetensors", tmp_path)
    else:
        save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    return tmp_path


def test_errors_name_the_problem(lm_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json does not exist"):
        load_hf_gpt2(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors does not exist"):
        load_hf_gpt2(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="model.safetensors: not a safetensors file"):
        load_hf_gpt2(tmp_path)
    tensors = load_file(lm_dir / "model.safetensors")
    with pytest.raises(
        ValueError, match=r"h.0.mlp.c_fc.weight has shape \(64, 256\), .*\(64, 96\)"
    ):
        load_hf_gpt2(_folder_with(lm_dir, tmp_path, {"n_inner": 96}))
    with pytest.raises(ValueError, match=r"wpe.weight has shape \(32, 64\), .*\(64, 64\)"):
        load_hf_gpt2(_folder_with(lm_dir, tmp_path, {"n_positions": 64}))
    missing = {k: v for k, v in tensors.items() if k != "transformer.h.1.ln_2.bias"}
    with pytest.raises(ValueError, match="model.safetensors lacks h.1.ln_2.bias"):
        load_hf_gpt2(_folder_with(lm_dir, tmp_path, tensors=missing))
    untied = {**tensors, "lm_head.weight": tensors["transformer.wte.weight"] + 1}
    with pytest.raises(ValueError, match="lm_head.weight differs from wte.weight"):
        load_hf_gpt2(_folder_with(lm_dir, tmp_path, tensors=untied))
    extra = {**tensors, "transformer.h.2.ln_1.bias": tensors["transformer.h.1.ln_1.bias"]}
    with pytest.raises(ValueError, match="tensors a GPT-2 LM does not: h.2.ln_1.bias"):
        load_hf_gpt2(_folder_with(lm_dir, tmp_path, tensors=extra))
    for option, value in [
        ("scale_attn_by_inverse_layer_idx", True),
        ("activation_function", "relu"),
        ("scale_attn_weights", False),
        ("add_cross_attention", True),
    ]:
        with pytest.raises(ValueError, match=f"config.json: not a GPT-2 .*{option}.*not supported"):
            load_hf_gpt2(_folder_with(lm_dir, tmp_path, {option: value}))
    with pytest.raises(ValueError, match="model_type 'bert' is not 'gpt2'"):
        load_hf_gpt2(_folder_with(lm_dir, tmp_path, {"model_type": "bert"}))
    with pytest.raises(ValueError, match="embd_pdrop .* differs from resid_pdrop"):
        load_hf_gpt2(_folder_with(lm_dir, tmp_path, {"embd_pdrop": 0.1}))

    config, params = load_hf_gpt2(lm_dir)
    with pytest.raises(ValueError, match="GPT-2 has pre-LN blocks and learned positions"):
        save_hf_gpt2(GPTConfig.tiny(101, position="rope"), params, tmp_path)
    del params["layers_1"]["fc"]["bias"]
    with pytest.raises(ValueError, match="params lack layers_1/fc/bias"):
        save_hf_gpt2(config, params, tmp_path)
