"""GPT-1's fine-tuning classifier (section 3.2): W_y reads the last block's state at each
segment's extract token (float64 NumPy from the GPT's own states), pre-trained parameters
reproduce the pre-trained LM inside it, and a checkpoint rebuilds it."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax.models import gpt
from attention_jax.training import checkpoint
from attention_jax.training.state import overlay_params
from tests.ops.reference import JIT_VARIANTS

GPT_CONFIG = gpt.GPTConfig.tiny(
    31, num_layers=2, d_model=16, num_heads=2, d_ff=32, max_len=16, dropout_rate=0.1
)
CONFIG = gpt.GPTClassifierConfig(**dataclasses.asdict(GPT_CONFIG), num_labels=3)
# Row 0: one sequence and padding; row 1: two segments (the similarity layout), no padding.
TOKENS_BT = np.array([[2, 7, 8, 9, 3, 0, 0, 0], [2, 5, 4, 6, 3, 2, 6, 3]], np.int32)
SEGMENTS_BT = np.array([[1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 2, 2, 2]], np.int32)
POSITIONS_BT = np.array([[0, 1, 2, 3, 4, 0, 0, 0], [0, 1, 2, 3, 4, 0, 1, 2]], np.int32)


def init(model, seed=0):
    return nn.unbox(model.init(jax.random.PRNGKey(seed), jnp.asarray(TOKENS_BT))["params"])


def extract_positions(segments_T):
    """The index of the last token of each segment, found by walking the row."""
    return [
        t
        for t in range(len(segments_T))
        if segments_T[t] and segments_T[t] not in segments_T[t + 1 :]
    ]


@pytest.mark.parametrize("transform", JIT_VARIANTS)
def test_head_reads_the_extract_tokens_states(transform):
    model = gpt.GPTClassifier(CONFIG)
    params = init(model)
    params["classifier"]["bias"] = jnp.arange(3.0)  # zero at initialisation: make it count
    apply = transform(functools.partial(model.apply, return_lm_logits=True))
    logits_BC, lm_logits_BTV = apply({"params": params}, TOKENS_BT, SEGMENTS_BT, POSITIONS_BT)
    gpt_logits_BTV, states_BTD = gpt.GPT(GPT_CONFIG).apply(
        {"params": params["gpt"]}, TOKENS_BT, SEGMENTS_BT, POSITIONS_BT, return_states=True
    )
    states = np.asarray(states_BTD, np.float64)
    w_DC = np.asarray(params["classifier"]["kernel"], np.float64)
    b_C = np.asarray(params["classifier"]["bias"], np.float64)
    assert [extract_positions(row) for row in SEGMENTS_BT] == [[4], [4, 7]]
    expected_BC = np.stack(
        [
            sum(states[b, t] for t in extract_positions(SEGMENTS_BT[b])) @ w_DC + b_C
            for b in range(len(TOKENS_BT))
        ]
    )
    np.testing.assert_allclose(logits_BC, expected_BC, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lm_logits_BTV, gpt_logits_BTV, rtol=1e-5, atol=1e-6)
    without = model.apply({"params": params}, TOKENS_BT, SEGMENTS_BT, POSITIONS_BT)
    np.testing.assert_allclose(without, logits_BC, rtol=1e-5, atol=1e-6)


def test_no_segment_ids_reads_the_last_token():
    model = gpt.GPTClassifier(CONFIG)
    params = init(model)
    tokens_BT = TOKENS_BT[:, :5]
    _, states_BTD = gpt.GPT(GPT_CONFIG).apply(
        {"params": params["gpt"]}, tokens_BT, return_states=True
    )
    expected_BC = np.asarray(states_BTD, np.float64)[:, -1] @ np.asarray(
        params["classifier"]["kernel"], np.float64
    )
    np.testing.assert_allclose(model.apply({"params": params}, tokens_BT), expected_BC, atol=1e-6)


def test_pretrained_params_reproduce_the_language_model_and_keep_the_fresh_head():
    pretrained = init(gpt.GPT(GPT_CONFIG), seed=7)
    model = gpt.GPTClassifier(CONFIG)
    fresh = init(model)
    params = overlay_params(fresh, model.pretrained_params(pretrained))
    _, lm_logits_BTV = model.apply(
        {"params": params}, TOKENS_BT, SEGMENTS_BT, POSITIONS_BT, return_lm_logits=True
    )
    expected_BTV = gpt.GPT(GPT_CONFIG).apply(
        {"params": pretrained}, TOKENS_BT, SEGMENTS_BT, POSITIONS_BT
    )
    np.testing.assert_array_equal(lm_logits_BTV, expected_BTV)
    for name in ("kernel", "bias"):
        np.testing.assert_array_equal(params["classifier"][name], fresh["classifier"][name])
    assert not np.allclose(params["gpt"]["wte"]["embedding"], fresh["gpt"]["wte"]["embedding"])


def test_dropout_only_when_training():
    model = gpt.GPTClassifier(CONFIG)
    params = init(model)
    args = ({"params": params}, TOKENS_BT, SEGMENTS_BT, POSITIONS_BT)
    eval_BC = model.apply(*args)
    rngs = {"dropout": jax.random.PRNGKey(1)}
    assert not np.allclose(model.apply(*args, deterministic=False, rngs=rngs), eval_BC)


def test_checkpoint_rebuilds_the_classifier_and_config_errors():
    model = gpt.GPTClassifier(CONFIG)
    rebuilt = checkpoint.build_model(checkpoint.model_spec(model))
    assert type(rebuilt) is gpt.GPTClassifier and rebuilt.config == CONFIG
    with pytest.raises(ValueError, match="num_labels must be positive, got 0"):
        dataclasses.replace(CONFIG, num_labels=0)
    assert gpt.GPTClassifierConfig.small(100, num_labels=5).num_labels == 5
