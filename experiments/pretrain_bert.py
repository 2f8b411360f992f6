"""Pre-trains BERT with masked LM + next sentence prediction (Devlin et al. 2019, section 3.1).

    python experiments/pretrain_bert.py --config=experiments/configs/bert_pretrain.py:tiny

Prepares the corpus once (SentencePiece model + static masked examples as a TFDS dataset), trains
with the shared loop, then reports the masked-LM loss before and after training and the
masked-token accuracy against the unigram baseline (always predict the most frequent token).
"""

import collections
import pathlib
import shutil

import jax
from absl import app, logging
from ml_collections import config_flags

from attention_jax import checkpoint, training
from attention_jax.data import batching, tfds_bert
from attention_jax.models import bert

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/bert_pretrain.py:tiny")


def loss_fn(params, batch, rng, *, model, train):
    mlm_logits_BPV, nsp_logits_B2 = model.apply(
        {"params": params},
        batch["input_ids"],
        batch["segment_ids"],
        batch["input_mask"],
        batch["masked_lm_positions"],
        deterministic=not train,
        rngs={"dropout": rng},
    )
    return bert.pretraining_loss(mlm_logits_BPV, nsp_logits_B2, batch)


def init_args(batch):
    return (
        batch["input_ids"],
        batch["segment_ids"],
        batch["input_mask"],
        batch["masked_lm_positions"],
    )


def prepare_phases(config):
    """One prepared dataset per sequence-length phase: [(steps, train_source, eval_source)]."""
    phases, tokenizer, first_step = [], None, 0
    for i, (max_seq_length, max_predictions, fraction) in enumerate(config.data.phases):
        last = i == len(config.data.phases) - 1
        end_step = (
            config.train.num_train_steps
            if last
            else first_step + round(fraction * config.train.num_train_steps)
        )
        train_source, eval_source, tokenizer = tfds_bert.prepare_pretraining_data(
            config.data.corpus_dir,
            config.data.output_dir,
            vocab_size=config.data.vocab_size,
            max_seq_length=max_seq_length,
            max_predictions_per_seq=max_predictions,
            dupe_factor=config.data.dupe_factor,
            short_seq_prob=config.data.short_seq_prob,
            masked_lm_prob=config.data.masked_lm_prob,
            whole_word_masking=config.data.whole_word_masking,
            seed=config.data.seed,
            eval_fraction=config.data.eval_fraction,
        )
        phases.append((end_step - first_step, train_source, eval_source))
        first_step = end_step
    return phases, tokenizer


def unigram_baseline(train_source, eval_source, max_examples=20_000):
    """Masked-token accuracy of always predicting the most frequent masked token of train."""

    def counts(source):
        c = collections.Counter()
        for i in range(min(len(source), max_examples)):
            example = source[i]
            c.update(example["masked_lm_ids"][example["masked_lm_weights"] > 0].tolist())
        return c

    most_frequent, _ = counts(train_source).most_common(1)[0]
    eval_counts = counts(eval_source)
    return eval_counts[most_frequent] / sum(eval_counts.values())


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save and restore at INFO.
    config = _CONFIG.value
    phases, tokenizer = prepare_phases(config)
    preset = getattr(bert.BertConfig, config.model_size)
    model_config = preset(tokenizer.vocab_size, dtype=config.train.dtype, **config.model_overrides)
    model = bert.BertForPreTraining(model_config)

    # Each host reads its own shard; the loop assembles the global batch.
    host_batch = config.train.batch_size // jax.process_count()
    shard = dict(shard_index=jax.process_index(), shard_count=jax.process_count())
    train_data = batching.PhasedBatches(
        [
            (steps, batching.pretraining_batches(source, host_batch, config.data.seed + i, **shard))
            for i, (steps, source, _) in enumerate(phases)
        ]
    )
    eval_source = phases[-1][2]

    def eval_data():
        return batching.pretraining_batches(
            eval_source, host_batch, 0, shuffle=False, num_epochs=1, **shard
        )

    # The tokenizer travels with the checkpoints, so the run directory is self-contained.
    workdir = pathlib.Path(config.train.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(tokenizer.path, workdir / pathlib.Path(tokenizer.path).name)
    max_seq_length, max_predictions, _ = config.data.phases[0]
    flops = bert.flops_per_example(model_config, max_seq_length, max_predictions)

    first = next(iter(eval_data()))
    eval_step = jax.jit(training.make_eval_step(model, loss_fn))
    n = config.train.num_eval_steps
    init_params = model.init(jax.random.PRNGKey(config.train.seed), *init_args(first))["params"]
    initial = training.evaluate(lambda b: eval_step(init_params, b), eval_data, n)
    training.train(config.train, model, loss_fn, train_data, init_args, eval_data, flops)

    if jax.process_index() == 0:
        restored = checkpoint.load(workdir)
        final = training.evaluate(lambda b: eval_step(restored.params, b), eval_data, n)
        baseline = unigram_baseline(phases[-1][1], eval_source)
        print(
            f"\nBERT-{config.model_size} ({model_config.num_layers} layers, hidden "
            f"{model_config.hidden_size}), {restored.step} steps, eval on {len(eval_source)} "
            f"held-out examples:\n"
            f"  masked-LM loss      {initial['mlm_loss']:.3f} -> {final['mlm_loss']:.3f}\n"
            f"  masked-LM accuracy  {initial['mlm_accuracy']:.3f} -> "
            f"{final['mlm_accuracy']:.3f}   (unigram baseline {baseline:.3f})\n"
            f"  next-sentence acc.  {initial['nsp_accuracy']:.3f} -> {final['nsp_accuracy']:.3f}\n"
            f"Checkpoints: {workdir}/checkpoints   TensorBoard: tensorboard --logdir {workdir}"
        )


if __name__ == "__main__":
    app.run(main)
