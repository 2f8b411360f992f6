"""Pre-trains a GPT language model on a text corpus (Radford et al. 2018, section 3.1).

    python experiments/pretrain_gpt.py --config=experiments/configs/gpt_pretrain.py:small

Splits the corpus by document, trains a SentencePiece tokenizer on the training documents, packs
documents into rows, trains with the shared loop, then reports held-out perplexity per token and
per word before and after training, against a unigram and a Kneser-Ney bigram baseline counted on
the same training documents, and at longer contexts when `eval_context_multiples` asks; writes
them to <workdir>/results.json.
"""

import json
import pathlib
import shutil

import jax

from attention_jax import checkpoint, cli, training
from attention_jax.data import batching
from attention_jax.data import language_model as lm_data
from attention_jax.evaluation import perplexity
from attention_jax.models import gpt
from attention_jax.tasks import language_model

_CONFIG = cli.config_flag("experiments/configs/gpt_pretrain.py:small")


def held_out(task, params, corpus, T, batch_size, num_words):
    """Perplexity per token and per word of the held-out documents, packed into rows of T."""
    rows = lm_data.pack_documents(corpus.eval, T)
    eval_step = jax.jit(training.make_eval_step(task))
    means = training.evaluate(
        lambda b: eval_step(params, b), lambda: batching.eval_batches(rows, batch_size)
    )
    tokens = int((rows["segment_ids"] > 0).sum())
    nll_sum = means["nll"] * tokens
    return perplexity.perplexity(nll_sum, tokens), perplexity.perplexity(nll_sum, num_words)


def main(config):
    language_model.check_model_size(config.model_size)  # before preparing data
    corpus = lm_data.prepare(config.data)
    vocab_size = corpus.tokenizer.vocab_size
    task = language_model.create(
        config.model_size, vocab_size, config.train, config.model_overrides
    )
    T, model_config = config.data.seq_len, task.model.config
    if T > model_config.max_len:
        raise ValueError(f"data.seq_len {T} exceeds the model's max_len {model_config.max_len}")
    for multiple in config.eval_context_multiples:
        if multiple * T > model_config.max_len:
            raise ValueError(f"eval context {multiple}×{T} exceeds max_len {model_config.max_len}")

    train_rows = lm_data.pack_documents(corpus.train, T)
    eval_rows = lm_data.pack_documents(corpus.eval, T)
    host_batch = config.train.batch_size // jax.process_count()
    shard = dict(shard_index=jax.process_index(), shard_count=jax.process_count())
    train_data = batching.pretraining_batches(
        batching.ArraySource(train_rows), host_batch, config.data.seed, **shard
    )

    def eval_data():
        return batching.eval_batches(eval_rows, config.eval_batch_size)

    workdir = pathlib.Path(config.train.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for path in corpus.tokenizer.files:  # the run directory is self-contained
        shutil.copy(path, workdir / pathlib.Path(path).name)
    num_words = lm_data.count_words(corpus.eval_texts)
    batch = next(eval_data())
    init = task.model.init(jax.random.PRNGKey(config.train.seed), *task.inputs(batch))
    before = held_out(task, init["params"], corpus, T, config.eval_batch_size, num_words)
    training.train(
        config.train, task, train_data, eval_data, T * gpt.flops_per_token(model_config, T)
    )
    if jax.process_index() != 0:
        return

    restored = checkpoint.load(workdir)
    results = {"steps": restored.step, "before": before, "contexts": {}}
    for multiple in sorted({1, *config.eval_context_multiples}):
        batch_size = max(1, config.eval_batch_size // multiple)
        results["contexts"][multiple * T] = held_out(
            task, restored.params, corpus, multiple * T, batch_size, num_words
        )
    for name, nll in (
        ("unigram", perplexity.unigram_nll(corpus.train, corpus.eval, vocab_size)),
        ("bigram", perplexity.kneser_ney_bigram_nll(corpus.train, corpus.eval, vocab_size)),
    ):
        results[name] = (perplexity.perplexity(*nll), perplexity.perplexity(nll[0], num_words))
    (workdir / "results.json").write_text(json.dumps(results, indent=2))

    after = results["contexts"][T]
    print(
        f"\nGPT-{config.model_size} ({model_config.num_layers} blocks, D = {model_config.d_model}, "
        f"{model_config.position} positions), {restored.step} steps of {config.train.batch_size} "
        f"× {T} tokens; {len(corpus.eval)} held-out documents, "
        f"{int((eval_rows['segment_ids'] > 0).sum())} tokens, {num_words} words:\n"
        f"                      per token   per word\n"
        f"  before training    {before[0]:9.1f}  {before[1]:9.1f}\n"
        f"  after training     {after[0]:9.1f}  {after[1]:9.1f}\n"
        f"  unigram baseline   {results['unigram'][0]:9.1f}  {results['unigram'][1]:9.1f}\n"
        f"  bigram (KN)        {results['bigram'][0]:9.1f}  {results['bigram'][1]:9.1f}"
    )
    for length, (per_token, per_word) in list(results["contexts"].items())[1:]:
        print(f"  context {length:5d}      {per_token:9.1f}  {per_word:9.1f}")
    print(f"Checkpoints: {workdir}/checkpoints   TensorBoard: tensorboard --logdir {workdir}")


if __name__ == "__main__":
    cli.run(main, _CONFIG)
