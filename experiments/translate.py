"""Trains a translation model with attention, decodes with beam search and scores BLEU.

    python experiments/translate.py --config=experiments/configs/translate.py:transformer
    python experiments/translate.py --config=experiments/configs/translate.py:rnn \
        --config.model_overrides.attention=luong_general

Reads a parallel corpus (Multi30k by default) through the `ParallelText` TFDS builder, trains one
joint SentencePiece model on both sides of the training pairs, trains the Transformer or the RNN
encoder-decoder with the shared loop (teacher forcing, validation loss during training), then
decodes the evaluation split with beam search and scores corpus BLEU (sacrebleu) on the
detokenised output, cased and lowercased, with the parameters averaged over the newest
checkpoints. The translations, BLEU, and the wall times go to <workdir>/results.json;
source × target alignment heatmaps of the first validation sentences (the RNN's attention, the
Transformer's last-layer cross-attention heads) go to <workdir>/alignments/*.png and TensorBoard.
"""

import functools
import json
import pathlib
import shutil
import time

import jax
import tensorboardX

from attention_jax import checkpoint, cli, evaluation, training
from attention_jax.data import tokenizers, translation
from attention_jax.tasks import translation as translation_task

_CONFIG = cli.config_flag("experiments/configs/translate.py:transformer")


def run(config) -> dict:
    """Trains (resuming if the workdir has checkpoints), decodes and scores; returns results."""
    d, n_average = config.data, config.eval.average_checkpoints
    translation_task.model_preset(config.model, config.model_size)  # before preparing data
    every = config.train.checkpoint_every_steps
    saves = -(-config.train.num_train_steps // every) if every else 0  # and one at the end
    if not 1 <= n_average <= min(config.train.keep_checkpoints, saves):
        raise ValueError(
            f"eval.average_checkpoints={n_average} needs that many checkpoints kept and saved "
            f"(train.keep_checkpoints={config.train.keep_checkpoints}, "
            f"checkpoint_every_steps={config.train.checkpoint_every_steps})"
        )
    if not config.train.workdir:
        attention = f"_{config.model_overrides.attention}" if config.model == "rnn" else ""
        config.train.workdir = f"runs/translate_{config.model}_{config.model_size}{attention}"
    workdir = pathlib.Path(config.train.workdir)
    pathlib.Path(d.output_dir).mkdir(parents=True, exist_ok=True)
    load = functools.partial(
        translation.load_dataset_pairs,
        d.dataset,
        manual_dir=d.manual_dir,
        source_lang=d.source_lang,
        target_lang=d.target_lang,
        data_dir=f"{d.output_dir}/tfds",
    )
    train_pairs, eval_pairs = load("train"), load(config.eval.split)
    tokenizer = translation.joint_tokenizer(
        train_pairs, d.output_dir, vocab_size=d.vocab_size, lowercase=d.lowercase, seed=d.seed
    )
    task = translation_task.create(
        config.model,
        config.model_size,
        tokenizer.vocab_size,
        config.train,
        label_smoothing=config.label_smoothing,
        overrides=config.model_overrides,
    )

    shard = dict(shard_index=jax.process_index(), shard_count=jax.process_count())
    batches = functools.partial(translation.pair_batches, tokenizer)
    train_data = batches(
        train_pairs, config.train.batch_size, d.seed, shuffle=True, max_len=d.max_len, **shard
    )
    eval_data = functools.partial(
        batches, eval_pairs, config.train.batch_size, 0, shuffle=False, **shard
    )
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(tokenizer.path, workdir / tokenizers.SENTENCEPIECE_FILENAME)

    start = time.perf_counter()
    training.train(config.train, task, train_data, eval_data)
    train_seconds = time.perf_counter() - start
    if jax.process_index() != 0:
        return {}

    restored = checkpoint.average(workdir, n_average)
    start = time.perf_counter()
    hypotheses = task.translate(
        restored.params,
        batches(eval_pairs, config.eval.batch_size, 0, shuffle=False, shard_count=1),
        bos_id=tokenizer.cls_id,
        eos_id=tokenizer.sep_id,
        beam_size=config.eval.beam_size,
        alpha=config.eval.alpha,
        extra_decode_len=config.eval.extra_decode_len,
    )
    decode_seconds = time.perf_counter() - start
    texts = [tokenizer.decode(h) for h in hypotheses]
    references = [t for _, t in eval_pairs]
    bleu, bleu_lowercase = (
        evaluation.corpus_bleu(texts, references, lowercase=lc) for lc in (False, True)
    )
    writer = tensorboardX.SummaryWriter(str(workdir / "tensorboard"))
    n = config.eval.num_alignment_plots
    task.plot_alignments(
        restored.params,
        tokenizer,
        eval_pairs[:n],
        hypotheses[:n],
        workdir / "alignments",
        config.eval.split,
        writer,
        restored.step,
    )
    writer.close()
    (workdir / f"{config.eval.split}.hyp.txt").write_text("".join(f"{t}\n" for t in texts))
    results = {
        "bleu": bleu.score,
        "bleu_lowercase": bleu_lowercase.score,
        "bleu_signature": bleu.signature,
        "split": config.eval.split,
        "sentences": len(eval_pairs),
        "steps": int(restored.step),
        "averaged_steps": restored.averaged_steps,
        "train_seconds": round(train_seconds, 1),
        "decode_seconds": round(decode_seconds, 1),
    }
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(config):
    results = run(config)
    if results:
        attention = f", {config.model_overrides.attention}" if config.model == "rnn" else ""
        print(
            f"\n{config.model} ({config.model_size}{attention}), {results['steps']} steps: "
            f"BLEU {results['bleu']:.2f} cased, {results['bleu_lowercase']:.2f} lowercased on "
            f"{results['sentences']} {results['split']} sentences (beam {config.eval.beam_size}, "
            f"averaging steps {results['averaged_steps']}; {results['bleu_signature']})\n"
            f"Training {results['train_seconds']:.0f} s, decoding "
            f"{results['decode_seconds']:.0f} s. Outputs, alignments and TensorBoard events: "
            f"{config.train.workdir}"
        )


if __name__ == "__main__":
    cli.run(main, _CONFIG)
