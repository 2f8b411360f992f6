"""Translation task: the teacher-forced loss against NumPy float64, alignments of both model
families, beam-search translation of PairBatches, and `create`.

B batch, S source length, T target length, V vocabulary, N heads.
"""

import jax
import numpy as np
import pytest

from attention_jax import training
from attention_jax.data import batching
from attention_jax.tasks import translation

V = 24
TINY = {
    "transformer": {"d_model": 16, "d_ff": 32, "num_heads": 2},
    "rnn": {"embed_size": 8, "encoder_hidden_size": 8, "decoder_hidden_size": 16},
}


def make_task(model, label_smoothing=0.0):
    return translation.create(
        model,
        "tiny",
        V,
        training.default_config(),
        label_smoothing=label_smoothing,
        overrides={**TINY[model], "dropout_rate": None},
    )


def make_batch(seed, B=3, S=5, T=7):
    rng = np.random.default_rng(seed)
    inputs = rng.integers(4, V, (B, S)) * (np.arange(S)[None] < [[S], [3], [4]])
    targets = rng.integers(4, V, (B, T)) * (np.arange(T)[None] < [[T], [4], [6]])
    targets[:, 0] = 2  # BOS
    return {"inputs": inputs.astype(np.int32), "targets": targets.astype(np.int32)}


@pytest.fixture(scope="module", params=["transformer", "rnn"])
def task_and_params(request):
    task = make_task(request.param, label_smoothing=0.1)
    params = jax.jit(task.model.init)(jax.random.key(0), *task.inputs(make_batch(0)))["params"]
    return task, params


def test_loss_is_smoothed_cross_entropy_of_the_next_token_over_real_tokens(task_and_params):
    task, params = task_and_params
    batch = make_batch(1)
    logits_BTV = np.asarray(
        task.model.apply({"params": params}, batch["inputs"], batch["targets"][:, :-1]), np.float64
    )
    labels_BT = batch["targets"][:, 1:]
    log_p = logits_BTV - logits_BTV.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    eps = task.label_smoothing
    q_BTV = (1 - eps) * np.eye(V)[labels_BT] + eps / V
    real_BT = labels_BT != 0
    expected = (-(q_BTV * log_p).sum(-1) * real_BT).sum() / real_BT.sum()
    nll = (-np.take_along_axis(log_p, labels_BT[..., None], -1)[..., 0] * real_BT).sum()
    loss, metrics = jax.jit(lambda p, b: task.loss(p, b, None, train=False))(params, batch)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["nll"], (nll, real_BT.sum()), rtol=1e-5)
    assert metrics["target_tokens"][0] == real_BT.sum()


def test_alignment_rows_are_distributions_over_the_source(task_and_params):
    task, params = task_and_params
    batch = make_batch(2)
    weights_NTS = task.alignment(params, batch["inputs"][1, :3], batch["targets"][1, :4])
    heads = 2 if task.model.config.__class__.__name__ == "TransformerConfig" else 1
    assert weights_NTS.shape == (heads, 4, 3)
    np.testing.assert_allclose(weights_NTS.sum(-1), 1.0, atol=1e-5)


def test_translate_returns_one_hypothesis_per_real_pair_without_eos(task_and_params):
    task, params = task_and_params
    rng = np.random.default_rng(3)
    sources = [list(rng.integers(4, V, n)) for n in (3, 5, 2)]
    batches = batching.PairBatches(
        sources, sources, 2, 0, bos_id=2, eos_id=3, shuffle=False, shard_count=1
    )
    hypotheses = task.translate(
        params, batches, bos_id=2, eos_id=3, beam_size=2, extra_decode_len=4
    )
    assert len(hypotheses) == 3
    for hypothesis in hypotheses:
        assert 3 not in hypothesis and len(hypothesis) <= 16 + 4  # sources padded to 16
        assert all(isinstance(token, int) for token in hypothesis)


def test_create_checks_its_settings():
    train_config = training.default_config()
    train_config.dtype = "bfloat16"
    task = translation.create("rnn", "tiny", V, train_config, overrides={"cell": "gru"})
    assert (task.model.config.dtype, task.model.config.cell) == ("bfloat16", "gru")
    with pytest.raises(ValueError, match="model must be one of"):
        translation.create("lstm", "tiny", V, train_config)
    with pytest.raises(ValueError, match="TransformerConfig has no preset 'huge'"):
        translation.create("transformer", "huge", V, train_config)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\), got 1.0"):
        translation.create("transformer", "tiny", V, train_config, label_smoothing=1.0)
