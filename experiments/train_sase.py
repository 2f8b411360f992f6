"""Trains the structured self-attentive sentence embedding classifier (Lin et al. 2017).

    python experiments/train_sase.py --config=experiments/configs/sase.py:random
    python experiments/train_sase.py --config=experiments/configs/sase.py:minilm \
        --config.penalty_coefficient=0

Reads SST-2 (the local GLUE TSV, split into leak-free train and validation sentences) or a TFDS
dataset by name, tokenises with the embeddings' tokenizer (words for random or word2vec / GloVe
vectors, WordPiece for a BERT's input embeddings), trains with the shared loop (cross-entropy
plus the penalty, validation every few hundred steps), then scores the validation set:
accuracy, penalty and the mean pairwise overlap of the hops. Results go to
<workdir>/results.json; each hop's attention over the first validation sentences goes to
<workdir>/attention/hops_*.png, the summed hops to attention/attention.html, both to TensorBoard.
"""

import json
import pathlib
import time

import tensorboardX

from attention_jax import checkpoint, cli, training
from attention_jax.data import sase as sase_data
from attention_jax.tasks import sase

_CONFIG = cli.config_flag("experiments/configs/sase.py:random")


def run(config) -> dict:
    """Prepares the data, trains (resuming if the workdir has checkpoints) and evaluates."""
    d = config.data
    if not config.train.workdir:
        name = pathlib.Path(config.embeddings).stem
        config.train.workdir = f"runs/sase_{name}_penalty{config.penalty_coefficient:g}"
    workdir = pathlib.Path(config.train.workdir)
    data = sase.prepare(d, config.embeddings)
    overrides = {
        **config.model_overrides.to_dict(),
        "num_classes": len(set(data.train_labels_Z)),
        "pair": len(data.train_rows[0]) == 2,  # SNLI: premise and hypothesis
    }
    if data.embed_size is not None:
        overrides["embed_size"] = data.embed_size
    task = sase.create(
        config.model_size,
        data.vocab_size,
        config.train,
        penalty_coefficient=config.penalty_coefficient,
        overrides=overrides,
    )
    workdir.mkdir(parents=True, exist_ok=True)
    sase.save_tokenizer(data.tokenizer, workdir)

    train_data = sase_data.SentenceBatches(
        data.train_rows, data.train_labels_Z, config.train.batch_size, d.seed, bucket=d.bucket
    )

    def eval_data():
        return sase_data.SentenceBatches(
            data.eval_rows, data.eval_labels_Z, config.eval.batch_size, shuffle=False, bucket=16
        )

    start = time.perf_counter()
    training.train(config.train, task, train_data, eval_data, init_params=data.init_params)
    train_seconds = time.perf_counter() - start

    restored = checkpoint.load(workdir)
    metrics = task.evaluate(restored.params, eval_data())
    writer = tensorboardX.SummaryWriter(str(workdir / "tensorboard"))
    n = config.eval.num_plots
    task.plot_hops(
        restored.params,
        data.tokenizer,
        [row[0] for row in data.eval_texts[:n]],
        data.eval_labels_Z[:n].tolist(),
        workdir / "attention",
        writer,
        int(restored.step),
        max_len=d.max_len,
    )
    writer.close()
    results = {
        **{k: round(v, 4) for k, v in metrics.items()},
        "steps": int(restored.step),
        "train_seconds": round(train_seconds, 1),
        "eval_sentences": len(data.eval_rows),
        **data.info,
    }
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(config):
    r = run(config)
    print(
        f"\nSASE ({config.model_size}, {config.embeddings} embeddings, penalty "
        f"{config.penalty_coefficient:g}), {r['steps']} steps: accuracy {r['accuracy']:.4f} on "
        f"{r['eval_sentences']} validation sentences, mean hop overlap {r['hop_overlap']:.3f}, "
        f"penalty {r['penalty']:.3f}.\nTraining {r['train_seconds']:.0f} s. Results, attention "
        f"plots and TensorBoard events: {config.train.workdir}"
    )


if __name__ == "__main__":
    cli.run(main, _CONFIG)
