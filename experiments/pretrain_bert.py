"""Pre-trains BERT with masked LM + next sentence prediction (Devlin et al. 2019, section 3.1).

    python experiments/pretrain_bert.py --config=experiments/configs/bert_pretrain.py:tiny

Prepares the corpus once (SentencePiece model + static masked examples as a TFDS dataset), trains
with the shared loop, then reports the masked-LM loss before and after training and the
masked-token accuracy against the unigram baseline (always predict the most frequent token).
"""

import pathlib
import shutil

import jax

from attention_jax import checkpoint, cli, training
from attention_jax.data import batching, tfds_bert
from attention_jax.models import bert
from attention_jax.tasks import bert_pretraining

_CONFIG = cli.config_flag("experiments/configs/bert_pretrain.py:tiny")


def main(config):
    bert_pretraining.check_model_size(config.model_size)  # before preparing data
    phases, tokenizer = tfds_bert.prepare_phases(config.data, config.train.num_train_steps)
    task = bert_pretraining.create(
        config.model_size, tokenizer.vocab_size, config.train, config.model_overrides
    )
    model_config = task.model.config

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
    eval_step = jax.jit(training.make_eval_step(task))
    n = config.train.num_eval_steps
    init = task.model.init(jax.random.PRNGKey(config.train.seed), *task.inputs(first))
    initial = training.evaluate(lambda b: eval_step(init["params"], b), eval_data, n)
    training.train(config.train, task, train_data, eval_data, flops)

    if jax.process_index() == 0:
        restored = checkpoint.load(workdir)
        final = training.evaluate(lambda b: eval_step(restored.params, b), eval_data, n)
        baseline = bert_pretraining.unigram_baseline(phases[-1][1], eval_source)
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
    cli.run(main, _CONFIG)
