"""BERT: shapes, masked-position MLM head, tied decoder, padding, remat, logical axis names,
the FLOP count, and every head against Hugging Face PyTorch BERT.

B batch, T sequence length, D hidden size, V vocabulary, P masked predictions, N heads, C labels.
"""

import dataclasses
import functools
import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import ClosedJaxpr, Jaxpr

from attention_jax.interop import save_hf_bert
from attention_jax.models.bert import (
    BertConfig,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    flops_per_example,
)
from attention_jax.tasks.bert_pretraining import pretraining_loss

CONFIG = BertConfig(
    vocab_size=97,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    intermediate_size=64,
    max_position_embeddings=24,
    num_labels=3,
)
ALLOWED_AXIS_NAMES = {"vocab", "embed", "mlp", "heads", "kv", "norm", None}


def make_batch(seed, B=3, T=11, P=4):
    """google-research/bert features: padded pairs "[CLS] A [SEP] B [SEP]" with masked positions."""
    rng = np.random.default_rng(seed)
    lengths_B = rng.integers(T // 2, T + 1, B)
    lengths_B[0] = T  # one full-length sequence
    input_mask_BT = np.arange(T)[None] < lengths_B[:, None]
    split_B = lengths_B // 2
    positions_BP = np.stack(
        [np.sort(rng.choice(np.arange(1, n), P, replace=False)) for n in lengths_B]
    )
    weights_BP = np.ones((B, P), np.float32)
    weights_BP[1, -1] = 0.0  # a padding prediction slot
    return {
        "input_ids": np.where(input_mask_BT, rng.integers(1, CONFIG.vocab_size, (B, T)), 0),
        "segment_ids": ((np.arange(T)[None] >= split_B[:, None]) & input_mask_BT).astype(np.int32),
        "input_mask": input_mask_BT.astype(np.int32),
        "masked_lm_positions": positions_BP,
        "masked_lm_ids": rng.integers(0, CONFIG.vocab_size, (B, P)),
        "masked_lm_weights": weights_BP,
        "next_sentence_labels": rng.integers(0, 2, (B, 1)),
    }


def inputs(batch):
    return batch["input_ids"], batch["segment_ids"], batch["input_mask"]


def abstract_params(model_class, batch):
    """The boxed parameter shapes and logical names of `model_class(CONFIG)`, without compiling."""
    args = (*inputs(batch), batch["masked_lm_positions"])[
        : 4 if model_class is BertForPreTraining else 3
    ]
    return jax.eval_shape(model_class(CONFIG).init, jax.random.key(0), *args)["params"]


def random_params(model_class, batch, seed):
    """Random values for every parameter (biases and LayerNorm included), in the init's tree.

    Filled in NumPy rather than by `init`, whose random initialisers take XLA seconds to compile.
    """
    rng = np.random.default_rng(seed)
    abstract = nn.meta.unbox(abstract_params(model_class, batch))
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: (
            (path[-1].key == "scale") + 0.1 * rng.standard_normal(leaf.shape, np.float32)
        ),
        abstract,
    )


@functools.cache
def jitted_apply(model_class, config=CONFIG):
    """One compiled `apply` per model and config, shared by the tests."""
    return jax.jit(model_class(config).apply, static_argnames=("deterministic", "mutable"))


@pytest.fixture(scope="module")
def batch():
    return make_batch(0)


@pytest.fixture(scope="module")
def params(batch):
    return random_params(BertForPreTraining, batch, seed=1)


def pretrain(params, batch, positions_BP="gather", **kwargs):
    positions_BP = batch["masked_lm_positions"] if positions_BP == "gather" else positions_BP
    return jitted_apply(BertForPreTraining)(
        {"params": params}, *inputs(batch), positions_BP, **kwargs
    )


@pytest.mark.parametrize(
    "preset, layers, hidden, heads",
    [
        ("tiny", 2, 128, 2),
        ("mini", 4, 256, 4),
        ("small", 4, 512, 8),
        ("medium", 8, 512, 8),
        ("base", 12, 768, 12),
        ("large", 24, 1024, 16),
    ],
)
def test_presets_follow_the_published_model_grid(preset, layers, hidden, heads):
    config = getattr(BertConfig, preset)(30522)
    assert (config.num_layers, config.hidden_size, config.num_heads) == (layers, hidden, heads)
    assert config.intermediate_size == 4 * hidden
    assert (config.vocab_size, config.max_position_embeddings) == (30522, 512)
    assert BertConfig.tiny(100, remat=True).remat


def test_config_is_json_round_trippable_and_checks_its_fields():
    assert BertConfig(**json.loads(json.dumps(dataclasses.asdict(CONFIG)))) == CONFIG
    with pytest.raises(ValueError, match="multiple of num_heads"):
        BertConfig(vocab_size=10, hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="unknown hidden_act 'swish'"):
        BertConfig(vocab_size=10, hidden_act="swish")
    with pytest.raises(ValueError, match="attention_implementation"):
        BertConfig(vocab_size=10, attention_implementation="flash")
    with pytest.raises(ValueError, match="dtype 'float31'"):
        BertConfig(vocab_size=10, dtype="float31")


@pytest.mark.parametrize(
    "model_class, shapes",
    [
        (BertModel, [(3, 11, 32), (3, 32)]),
        (BertForSequenceClassification, [(3, 3)]),
        (BertForQuestionAnswering, [(3, 11), (3, 11)]),
        (BertForTokenClassification, [(3, 11, 3)]),
    ],
)
def test_head_output_shapes(model_class, shapes, batch):
    params = random_params(model_class, batch, seed=2)
    outputs = jitted_apply(model_class)({"params": params}, *inputs(batch))
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    assert [o.shape for o in outputs] == shapes
    assert all(np.isfinite(o).all() and np.std(o) > 0 for o in outputs)


def test_pretraining_logits_only_at_the_gathered_positions(params, batch):
    positions_BP = batch["masked_lm_positions"]
    mlm_logits_BPV, nsp_logits_B2 = pretrain(params, batch)
    full_logits_BTV, full_nsp_logits_B2 = pretrain(params, batch, None)
    assert mlm_logits_BPV.shape == (3, 4, 97) and full_logits_BTV.shape == (3, 11, 97)
    gathered_BPV = np.take_along_axis(np.asarray(full_logits_BTV), positions_BP[..., None], axis=1)
    np.testing.assert_allclose(mlm_logits_BPV, gathered_BPV, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(nsp_logits_B2, full_nsp_logits_B2, atol=1e-6)


def test_mlm_decoder_is_the_word_embedding_matrix(params, batch):
    shapes = [x.shape for x in jax.tree.leaves(params)]
    assert shapes.count((CONFIG.vocab_size, CONFIG.hidden_size)) == 1  # no separate decoder
    # Move the embedding of a token the input never contains: the hidden states cannot change,
    # so if the decoder is that matrix only the token's own logit column moves.
    absent = next(v for v in range(CONFIG.vocab_size) if v not in batch["input_ids"])
    embeddings = params["bert"]["embeddings"]
    table_VD = embeddings["word_embeddings"]["embedding"].copy()
    table_VD[absent] += 1.0
    moved = {
        **params,
        "bert": {
            **params["bert"],
            "embeddings": {**embeddings, "word_embeddings": {"embedding": table_VD}},
        },
    }
    difference_BPV = np.asarray(pretrain(moved, batch)[0] - pretrain(params, batch)[0])
    assert np.abs(difference_BPV[..., absent]).min() > 1e-3
    np.testing.assert_allclose(np.delete(difference_BPV, absent, axis=-1), 0.0, atol=1e-5)


def test_padding_does_not_change_the_outputs_of_real_tokens(params, batch):
    encode = functools.partial(jitted_apply(BertModel), {"params": params["bert"]})
    sequence_BTD, pooled_BD = encode(*inputs(batch))
    rng = np.random.default_rng(5)
    real_BT = batch["input_mask"].astype(bool)
    extra = 5  # longer padding whose ids and segments are noise
    noisy = [
        np.pad(
            np.where(real_BT, x, rng.integers(0, high, x.shape)),
            ((0, 0), (0, extra)),
            constant_values=high - 1,
        )
        for x, high in ((batch["input_ids"], CONFIG.vocab_size), (batch["segment_ids"], 2))
    ]
    noisy_sequence_BTD, noisy_pooled_BD = encode(
        *noisy, np.pad(batch["input_mask"], ((0, 0), (0, extra)))
    )
    np.testing.assert_allclose(
        noisy_sequence_BTD[:, :11][real_BT], sequence_BTD[real_BT], atol=1e-5
    )
    np.testing.assert_allclose(noisy_pooled_BD, pooled_BD, atol=1e-5)
    assert np.abs(noisy_sequence_BTD[:, :11][~real_BT] - sequence_BTD[~real_BT]).max() > 1e-3


def test_jitted_and_eager_outputs_agree(params, batch):
    eager = BertForPreTraining(CONFIG).apply(
        {"params": params}, *inputs(batch), batch["masked_lm_positions"]
    )
    for jitted_output, eager_output in zip(pretrain(params, batch), eager, strict=True):
        np.testing.assert_allclose(jitted_output, eager_output, atol=1e-5, rtol=1e-5)


def test_remat_gives_the_same_outputs_and_gradients(params, batch):
    @functools.partial(jax.jit, static_argnames="config")
    def loss_and_grads(params, config, key):
        def loss(params):
            logits = BertForPreTraining(config).apply(
                {"params": params},
                *inputs(batch),
                batch["masked_lm_positions"],
                deterministic=False,
                rngs={"dropout": key},
            )
            return pretraining_loss(*logits, batch)[0]

        return jax.value_and_grad(loss)(params)

    config = dataclasses.replace(CONFIG, num_layers=1)  # each block is remat'ed alike
    params = {**params, "bert": {k: v for k, v in params["bert"].items() if k != "layers_1"}}
    key = jax.random.key(3)
    value, grads = loss_and_grads(params, config, key)
    remat_value, remat_grads = loss_and_grads(params, dataclasses.replace(config, remat=True), key)
    np.testing.assert_allclose(remat_value, value, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(remat_grads), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)
    # Dropout is on: another dropout key gives another loss.
    assert abs(loss_and_grads(params, config, jax.random.key(4))[0] - value) > 1e-4


@pytest.mark.parametrize(
    "model_class",
    [
        BertForPreTraining,
        BertForSequenceClassification,
        BertForQuestionAnswering,
        BertForTokenClassification,
    ],
)
def test_every_parameter_has_allowed_logical_axis_names(model_class, batch):
    params = abstract_params(model_class, batch)
    boxes = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert all(isinstance(box, nn.Partitioned) for box in boxes)
    for box in boxes:
        names = box.names
        assert len(names) == len(box.value.shape) and set(names) <= ALLOWED_AXIS_NAMES
        # flax.linen.logical_to_mesh_axes rejects a name used twice in one array.
        assert len([n for n in names if n]) == len({n for n in names if n}), names


def test_sown_attention_weights_and_hidden_states(params, batch):
    config = dataclasses.replace(CONFIG, sow_attention_weights=True)
    _, state = jitted_apply(BertModel, config)(
        {"params": params["bert"]}, *inputs(batch), mutable="intermediates"
    )
    intermediates = state["intermediates"]
    assert len(intermediates["hidden_states"]) == CONFIG.num_layers + 1
    pad_B11S = batch["input_mask"][:, None, None, :] == 0
    for i in range(CONFIG.num_layers):
        (weights_BNTS,) = intermediates[f"layers_{i}"]["attention"]["attention_weights"]
        assert weights_BNTS.shape == (3, 4, 11, 11)
        np.testing.assert_allclose(weights_BNTS.sum(-1), 1.0, atol=1e-5)
        assert np.all(np.where(pad_B11S, weights_BNTS, 0.0) == 0.0)


def _matmul_flops(jaxpr):
    """2·batch·m·n·k summed over every dot_general, nested jaxprs included."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contract, _), (batch, _) = eqn.params["dimension_numbers"]
            lhs, rhs = (v.aval.shape for v in eqn.invars)
            k = math.prod(lhs[i] for i in contract)
            b = math.prod(lhs[i] for i in batch)
            total += 2 * math.prod(lhs) * math.prod(rhs) // (k * b)
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                if isinstance(sub, ClosedJaxpr | Jaxpr):
                    total += _matmul_flops(sub.jaxpr if isinstance(sub, ClosedJaxpr) else sub)
    return total


def test_flops_per_example_counts_every_matmul_of_a_training_step(params, batch):
    def loss(params):
        logits = BertForPreTraining(CONFIG).apply(
            {"params": params}, *inputs(batch), batch["masked_lm_positions"]
        )
        return pretraining_loss(*logits, batch)[0]

    counted = _matmul_flops(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
    assert counted == 3 * flops_per_example(CONFIG, seq_len=11, num_predictions=4)


def test_a_sequence_longer_than_the_position_table_is_rejected(params):
    ids_BT = jnp.ones((1, CONFIG.max_position_embeddings + 1), jnp.int32)
    with pytest.raises(ValueError, match="exceeds max_position_embeddings"):
        jax.eval_shape(
            functools.partial(BertModel(CONFIG).apply, {"params": params["bert"]}), ids_BT
        )


@pytest.fixture(scope="module")
def transformers():
    pytest.importorskip("torch")
    return pytest.importorskip("transformers")


def _torch_inputs(batch):
    import torch

    return {
        "input_ids": torch.from_numpy(batch["input_ids"]),
        "token_type_ids": torch.from_numpy(batch["segment_ids"]),
        "attention_mask": torch.from_numpy(batch["input_mask"]),
    }


def test_pretraining_heads_match_hugging_face_pytorch(transformers, params, batch, tmp_path):
    import torch

    save_hf_bert(CONFIG, params, tmp_path)
    hf_model = transformers.BertForPreTraining.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        out = hf_model(**_torch_inputs(batch))
    mlm_logits_BPV, nsp_logits_B2 = pretrain(params, batch)
    hf_logits_BPV = np.take_along_axis(
        out.prediction_logits.numpy(), batch["masked_lm_positions"][..., None], axis=1
    )
    np.testing.assert_allclose(mlm_logits_BPV, hf_logits_BPV, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(
        nsp_logits_B2, out.seq_relationship_logits.numpy(), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize(
    "model_class, fields",
    [
        (BertForSequenceClassification, ["logits"]),
        (BertForTokenClassification, ["logits"]),
        (BertForQuestionAnswering, ["start_logits", "end_logits"]),
    ],
)
def test_fine_tuning_heads_match_hugging_face_pytorch(
    transformers, model_class, fields, batch, tmp_path
):
    import torch

    params = random_params(model_class, batch, seed=2)
    save_hf_bert(CONFIG, params, tmp_path)
    hf_model = getattr(transformers, model_class.__name__).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        out = hf_model(**_torch_inputs(batch))
    ours = jitted_apply(model_class)({"params": params}, *inputs(batch))
    ours = ours if isinstance(ours, tuple) else (ours,)
    for value, field in zip(ours, fields, strict=True):
        np.testing.assert_allclose(value, getattr(out, field).numpy(), atol=1e-5, rtol=1e-5)
