"""The dual encoder: pooling against NumPy float64, separate or shared encoders, each side equal
to a plain `BertModel` with its weights, and the checkpoint description.

B batch, T length, D hidden size.
"""

import dataclasses

import jax
import numpy as np
import pytest

from attention_jax.models import bert, dual_encoder
from attention_jax.training import checkpoint

TINY = dict(vocab_size=40, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)


def _inputs(seed, B=3, T=7):
    rng = np.random.default_rng(seed)
    mask_BT = (np.arange(T)[None] < rng.integers(2, T + 1, (B, 1))).astype(np.int32)
    return rng.integers(1, 40, (B, T)) * mask_BT, mask_BT


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("normalize", [False, True])
def test_pool_matches_numpy(pooling, normalize):
    rng = np.random.default_rng(0)
    hidden_BTD = rng.normal(size=(3, 5, 4))
    mask_BT = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    if pooling == "cls":
        expected_BD = hidden_BTD[:, 0]
    else:
        expected_BD = np.stack(
            [hidden_BTD[b, m.astype(bool)].mean(0) for b, m in enumerate(mask_BT)]
        )
    if normalize:
        expected_BD = expected_BD / np.linalg.norm(expected_BD, axis=-1, keepdims=True)
    actual = dual_encoder.pool(hidden_BTD.astype(np.float32), mask_BT, pooling, normalize)
    np.testing.assert_allclose(actual, expected_BD, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shared", [False, True])
def test_each_side_is_a_bert_model_with_its_weights(shared):
    config = dual_encoder.DualEncoderConfig(**TINY, pooling="mean", shared_encoder=shared)
    model = dual_encoder.DualEncoder(config)
    q_ids, q_mask = _inputs(1)
    p_ids, p_mask = _inputs(2, B=5, T=9)
    params = model.init(jax.random.PRNGKey(0), q_ids, q_mask, p_ids, p_mask)["params"]
    assert tuple(params) == dual_encoder.encoder_names(config)
    questions_BD, passages_ZD = model.apply({"params": params}, q_ids, q_mask, p_ids, p_mask)
    assert questions_BD.shape == (3, 16) and passages_ZD.shape == (5, 16)

    plain = bert.BertModel(bert.BertConfig(**TINY))
    for side, (ids, mask, out) in {
        "question": (q_ids, q_mask, questions_BD),
        "passage": (p_ids, p_mask, passages_ZD),
    }.items():
        name = "encoder" if shared else f"{side}_encoder"
        hidden_BTD, _ = plain.apply({"params": params[name]}, ids, None, mask)
        expected = dual_encoder.pool(hidden_BTD, mask, "mean", False)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6, err_msg=side)
    if not shared:  # two encoders, two different initialisations
        assert not np.allclose(
            questions_BD,
            model.apply(
                {"params": {**params, "question_encoder": params["passage_encoder"]}},
                q_ids,
                q_mask,
                p_ids,
                p_mask,
            )[0],
        )


def test_config_is_checkpointable_and_checked():
    config = dual_encoder.DualEncoderConfig(**TINY, pooling="mean", normalize=True)
    model = dual_encoder.DualEncoder(config)
    rebuilt = checkpoint.build_model(checkpoint.model_spec(model))
    assert type(rebuilt) is dual_encoder.DualEncoder and rebuilt.config == config
    with pytest.raises(ValueError, match="pooling must be one of"):
        dataclasses.replace(config, pooling="max")
