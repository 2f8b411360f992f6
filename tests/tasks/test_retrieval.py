"""The DPR task: equation 2 against NumPy float64, the loss and its gradients on 8 simulated
devices (jit over the mesh, and pmap with the passages gathered) equal to one device on the
same global batch, encoding, and `prepare` on DPR JSON with BM25 hard negatives.

B questions, Z passages, D embedding size.
"""

import json

import jax
import ml_collections
import numpy as np
import pytest

from attention_jax import training
from attention_jax.data.tokenizers import WordPieceTokenizer
from attention_jax.models import bert
from attention_jax.tasks import retrieval
from tests.training import tiny_runs

ENCODER = bert.BertConfig(
    vocab_size=40,
    hidden_size=16,
    num_layers=1,
    num_heads=2,
    intermediate_size=32,
    max_position_embeddings=16,
)
# Compared to 1e-5, so the 8-device process can skip XLA's slow LLVM optimisations.
FAST_COMPILE = {"XLA_FLAGS": "--xla_backend_optimization_level=0"}


def nll_float64(questions_BD, passages_ZD, positives_B, scale):
    scores_BZ = scale * np.asarray(questions_BD, np.float64) @ np.asarray(passages_ZD, np.float64).T
    log_z_B = np.log(np.exp(scores_BZ).sum(-1))
    return log_z_B - scores_BZ[np.arange(len(positives_B)), positives_B]


@pytest.mark.parametrize("scale", [1.0, 20.0])
def test_in_batch_nll_matches_numpy(scale):
    rng = np.random.default_rng(int(scale))
    questions_BD = rng.normal(size=(6, 8)).astype(np.float32) / 3
    passages_ZD = rng.normal(size=(12, 8)).astype(np.float32) / 3  # 6 positives, 6 negatives
    positives_B = np.arange(6)
    nll_B, correct_B = jax.jit(retrieval.in_batch_nll, static_argnums=3)(
        questions_BD, passages_ZD, positives_B, scale
    )
    expected_B = nll_float64(questions_BD, passages_ZD, positives_B, scale)
    np.testing.assert_allclose(nll_B, expected_B, rtol=1e-5, atol=1e-5)
    scores_BZ = questions_BD.astype(np.float64) @ passages_ZD.T
    np.testing.assert_array_equal(correct_B, scores_BZ.argmax(-1) == positives_B)


def _task(parallelism="jit"):
    config = training.default_config()
    config.parallelism = parallelism
    # One encoder for both sides halves what the 8-device test compiles; the loss is the same.
    overrides = {"pooling": "mean", "shared_encoder": True}
    return retrieval.create(ENCODER, config, overrides, scale=5.0)


def _batch(B, seed=0, T=6, S=9, hard_negatives=True):
    rng = np.random.default_rng(seed)
    sides = {"question": T, "passage": S, **({"hard_negative": S} if hard_negatives else {})}
    batch = {}
    for side, length in sides.items():
        mask = (np.arange(length)[None] < rng.integers(3, length + 1, (B, 1))).astype(np.int32)
        batch[f"{side}_input_ids"] = (rng.integers(1, 40, (B, length)) * mask).astype(np.int32)
        batch[f"{side}_input_mask"] = mask
    return batch


def test_loss_is_equation_2_over_the_model_outputs():
    task = _task()
    batch = _batch(4)
    params = task.model.init(jax.random.PRNGKey(0), *task.inputs(batch))["params"]
    loss, metrics = task.loss(params, batch, None, train=False)
    questions_BD, passages_ZD = task.apply(params, batch)
    assert passages_ZD.shape == (8, 16)  # 4 positives, then 4 hard negatives
    expected_B = nll_float64(questions_BD, passages_ZD, np.arange(4), 5.0)
    np.testing.assert_allclose(loss, expected_B.mean(), rtol=1e-5)
    assert float(metrics["in_batch_accuracy"][1]) == 4.0


DEVICES_SCRIPT = """
import dataclasses
import sys
import flax.jax_utils
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from attention_jax import training
from tests.tasks import test_retrieval as t

jax.config.update("jax_default_matmul_precision", "highest")
assert jax.device_count() == 8
batch = t._batch(16, seed=1)
task, pmap_task = t._task(), t._task("pmap")
params = task.model.init(jax.random.PRNGKey(0), *task.inputs(batch))["params"]


def loss(task):
    return jax.value_and_grad(lambda p, b: task.loss(p, b, None, train=False)[0])


one = jax.jit(loss(task))(*jax.device_put((params, batch), jax.devices()[0]))
mesh = jax.make_mesh((8,), ("data",))
rows, replicated = NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())
sharded = jax.jit(loss(task), in_shardings=(replicated, rows))(params, batch)


def pmapped(task):
    def step(p, b):
        value, grads = loss(task)(p, b)
        return jax.lax.pmean(value, "batch"), jax.lax.pmean(grads, "batch")

    per_device = {k: v.reshape(8, 2, *v.shape[1:]) for k, v in batch.items()}
    out = jax.pmap(step, axis_name="batch")(flax.jax_utils.replicate(params), per_device)
    return jax.tree.map(lambda x: x[0], out)


def trained(task, parallelism):  # one step of the loop, 2 micro-batches of 8, no dropout
    config = training.default_config()
    config.update(parallelism=parallelism, workdir=sys.argv[2] + parallelism, num_train_steps=1)
    config.update(batch_size=16, grad_accum_steps=2, checkpoint_every_steps=0, progress_bar=False)
    no_dropout = dataclasses.replace(
        task.model.config, hidden_dropout_rate=0.0, attention_dropout_rate=0.0
    )
    task = dataclasses.replace(task, model=task.model.clone(config=no_dropout))
    state = training.train(config, task, iter([batch]))
    return state.params if parallelism == "jit" else jax.tree.map(lambda x: x[0], state.params)


outs = {"one": one, "sharded": sharded, "pmap": pmapped(pmap_task), "pmap_local": pmapped(task)}
outs.update(loop_jit=trained(task, "jit"), loop_pmap=trained(pmap_task, "pmap"))
np.savez(sys.argv[1], **{
    name + jax.tree_util.keystr(path): np.asarray(value)
    for name, out in outs.items()
    for path, value in jax.tree_util.tree_leaves_with_path(out)
})
"""


def test_eight_devices_equal_one_device(tmp_path):
    """jit over an 8-device mesh, and pmap with `all_gather`, give the single-device loss and
    gradients on the same global batch (16 questions, 32 passages; 2 questions per device);
    pmap without the gather (each device's own 4 passages only) does not. Then one step of the
    training loop with each runner, with gradient accumulation, trains the same parameters."""
    out = tmp_path / "out.npz"
    tiny_runs.python(["-c", DEVICES_SCRIPT, out, tmp_path / "run_"], devices=8, env=FAST_COMPILE)
    results = dict(np.load(out))
    one = {k.removeprefix("one"): v for k, v in results.items() if k.startswith("one")}
    assert len(one) > 10
    for mode in ("sharded", "pmap"):
        for key, expected in one.items():
            np.testing.assert_allclose(
                results[mode + key], expected, rtol=1e-4, atol=1e-5, err_msg=mode + key
            )
    assert abs(results["pmap_local[0]"] - one["[0]"]) > 1e-3  # the loss, without the gather
    # The loop's runners: jit over the mesh and pmap train the same parameters.
    loop = [key.removeprefix("loop_jit") for key in results if key.startswith("loop_jit")]
    assert len(loop) > 10
    for key in loop:
        np.testing.assert_allclose(
            results["loop_pmap" + key], results["loop_jit" + key], rtol=1e-4, atol=1e-6, err_msg=key
        )


def test_encode_equals_apply_on_padded_batches():
    task = _task()
    batch = _batch(5, hard_negatives=False)
    params = task.model.init(jax.random.PRNGKey(0), *task.inputs(batch))["params"]
    questions_BD, passages_ZD = task.apply(params, batch)
    for side, expected in (("question", questions_BD), ("passage", passages_ZD)):
        features = {k.removeprefix(f"{side}_"): v for k, v in batch.items() if k.startswith(side)}
        encoded = task.encode(params, features, side, batch_size=2)
        np.testing.assert_allclose(encoded, expected, rtol=1e-5, atol=1e-6, err_msg=side)


WORDS = "[PAD] [UNK] [CLS] [SEP] [MASK] a the pickle class module socket open file read".split()
PAIRS = [
    ("pickle class", "pickle a class"),
    ("socket module", "open a socket"),
    ("read file", "read a file"),
    ("pickle module", "pickle the module"),
]


def test_prepare_dpr_json_with_bm25_hard_negatives(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(WORDS) + "\n")
    tokenizer = WordPieceTokenizer(vocab)
    rows = [
        {"question": q, "answers": [], "positive_ctxs": [{"title": "", "text": p}]}
        for q, p in PAIRS
    ]
    (tmp_path / "train.json").write_text(json.dumps(rows))
    (tmp_path / "dev.json").write_text(json.dumps(rows[:2]))
    d = ml_collections.ConfigDict(
        dict(
            format="dpr",
            train_file=str(tmp_path / "train.json"),
            eval_file=str(tmp_path / "dev.json"),
            max_question_length=6,
            max_passage_length=8,
            hard_negatives=True,
            evaluate_on="held_out",
        )
    )
    data = retrieval.prepare(d, tokenizer)
    assert data.info["train_questions"] == 4 and data.info["hard_negatives"]
    assert [p.text for p in data.passages] == [p for _, p in PAIRS]
    assert data.relevant == [{0}, {1}]
    assert data.train["hard_negative_input_ids"].shape == (4, 8)
    # BM25's best passage for "pickle class" after its positive shares the word "pickle".
    assert tokenizer.decode(data.train["hard_negative_input_ids"][0]) == (
        "[CLS] pickle the module [SEP]"
    )
    assert tokenizer.decode(data.train["hard_negative_input_ids"][3]) == (
        "[CLS] pickle a class [SEP]"
    )
    d.eval_file = str(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="data.eval_file .* does not exist"):
        retrieval.prepare(d, tokenizer)
