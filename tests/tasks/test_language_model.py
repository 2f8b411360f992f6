"""Language-modelling task: the loss over packed rows against NumPy float64, generation by every
method, and a short pre-training run on the shipped corpus that beats the Kneser-Ney bigram.

B batch, T length, V vocabulary.
"""

import gzip

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from attention_jax import training
from attention_jax.data import batching, corpus
from attention_jax.data import language_model as lm_data
from attention_jax.evaluation import perplexity
from attention_jax.tasks import language_model

V = 31
TINY = dict(num_layers=1, d_model=16, num_heads=2, d_ff=32, dropout_rate=0.0)
NO_DROPOUT = dict(dropout_rate=0.0, attention_dropout_rate=0.0)


def make_task(**overrides):
    return language_model.create("tiny", V, training.default_config(), {**TINY, **overrides})


def train_small_gpt(vocab_size: int, batches, steps: int, max_len: int):
    """A 2-block GPT (D = 64, no dropout) after `steps` AdamW steps (lr 3e-3, β2 = 0.95) on
    `batches`, an iterator of packed rows: (task, params)."""
    shape = dict(num_layers=2, d_model=64, num_heads=4, d_ff=256, max_len=max_len)
    task = language_model.create(
        "tiny", vocab_size, training.default_config(), {**shape, **NO_DROPOUT}
    )
    params = task.model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]
    optimizer = optax.adamw(3e-3, b2=0.95, weight_decay=0.0)

    @jax.jit
    def step(params, opt_state, batch):
        grads, _ = jax.grad(lambda p: task.loss(p, batch, None, train=False), has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    opt_state = optimizer.init(params)
    for _ in range(steps):
        params, opt_state = step(params, opt_state, next(batches))
    return task, params


def test_loss_is_the_mean_nll_of_the_real_targets():
    task = make_task(**NO_DROPOUT)
    rng = np.random.default_rng(0)
    documents = [[2, *rng.integers(5, V, n), 3] for n in (4, 11, 2, 7)]
    batch = lm_data.pack_documents(documents, 8)
    params = task.model.init(jax.random.PRNGKey(0), *task.inputs(batch))["params"]
    loss, metrics = task.loss(params, batch, None, train=False)

    logits = np.asarray(task.apply(params, batch), np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    real = batch["segment_ids"] > 0
    nll = -np.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0][real]
    assert real.sum() == sum(len(d) - 1 for d in documents)
    np.testing.assert_allclose(loss, nll.mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["nll"][0], nll.sum(), rtol=1e-5)
    assert metrics["nll"][1] == real.sum()


@pytest.mark.parametrize("method", ["greedy", "sample", "beam"])
def test_generate_continues_each_prompt(method):
    task = make_task(position="alibi")
    prompts = np.array([[2, 7, 8], [2, 9, 9]], np.int32)
    params = task.model.init(jax.random.PRNGKey(1), prompts)["params"]
    tokens = language_model.generate(
        task, params, prompts, 5, eos_id=3, method=method, top_k=5, beam_size=3
    )
    assert tokens.shape == (2, 5) and tokens.dtype == np.int32
    assert np.all((tokens >= 0) & (tokens < V))
    if method != "sample":
        again = language_model.generate(
            task, params, prompts, 5, eos_id=3, method=method, beam_size=3, use_cache=False
        )
        np.testing.assert_array_equal(tokens, again)


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(method="nucleus"), "method must be"), (dict(prompt_BT=np.zeros((3,))), "prompts must")],
)
def test_generate_rejects_bad_arguments(kwargs, message):
    task = make_task()
    params = task.model.init(jax.random.PRNGKey(1), jnp.zeros((1, 4), jnp.int32))["params"]
    args = dict(prompt_BT=np.ones((1, 3), np.int32), max_new_tokens=2, eos_id=3) | kwargs
    with pytest.raises(ValueError, match=message):
        language_model.generate(task, params, **args)


def test_unknown_model_size_is_a_one_line_error():
    with pytest.raises(ValueError, match="unknown GPT model size 'huge'"):
        language_model.create("huge", V, training.default_config())


def test_short_pretraining_beats_the_kneser_ney_bigram_on_held_out_chapters(tmp_path):
    """A character-level GPT, 250 steps on 150 chapters of the shipped Bible: its held-out
    perplexity per character must beat the bigram counted on the same training chapters."""
    with gzip.open(corpus.DEFAULT_CORPUS / "web.en.txt.gz", "rt", encoding="utf-8") as f:
        chapters = f.read().split("\n\n")[:150]
    (tmp_path / "slice.txt").write_text("\n\n".join(chapters), encoding="utf-8")
    config = ml_collections.ConfigDict(
        dict(
            corpus_dir=str(tmp_path / "slice.txt"),
            output_dir=str(tmp_path / "tokenizer"),
            tokenizer="char",
            vocab_size=200,
            lowercase=True,
            eval_fraction=0.1,
            seed=0,
        )
    )
    data = lm_data.prepare(config)
    vocab_size, T = data.tokenizer.vocab_size, 64
    train, held_out = (lm_data.pack_documents(docs, T) for docs in (data.train, data.eval))
    batches = batching.pretraining_batches(batching.ArraySource(train), 32, seed=0)
    task, params = train_small_gpt(vocab_size, batches, 250, T)
    eval_step = jax.jit(training.make_eval_step(task))
    nll = training.evaluate(
        lambda b: eval_step(params, b), lambda: batching.eval_batches(held_out, 64)
    )["nll"]
    bigram = perplexity.perplexity(
        *perplexity.kneser_ney_bigram_nll(data.train, data.eval, vocab_size)
    )
    assert np.exp(nll) < 0.9 * bigram, (np.exp(nll), bigram)
