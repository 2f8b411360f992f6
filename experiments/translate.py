"""Trains a translation model with attention, decodes with beam search and scores BLEU.

    python experiments/translate.py --config=experiments/configs/translate.py:transformer
    python experiments/translate.py --config=experiments/configs/translate.py:rnn \
        --config.model_overrides.attention=luong_general

Reads a parallel corpus (Multi30k by default) through the `ParallelText` TFDS builder, trains one
joint SentencePiece model on both sides of the training pairs, trains the Transformer or the RNN
encoder-decoder with the shared loop (teacher forcing, validation loss during training), then
decodes the evaluation split with beam search and scores corpus BLEU (sacrebleu) on the
detokenised output. The translations, BLEU, and the wall times go to <workdir>/results.json;
source × target alignment heatmaps of the first validation sentences (the RNN's attention, the
Transformer's last-layer cross-attention heads) go to <workdir>/alignments/*.png and TensorBoard.

B batch, S source length, T target length, N heads, W beams, L decoded length.
"""

import dataclasses
import functools
import hashlib
import json
import pathlib
import shutil
import tempfile
import time

import jax
import matplotlib.image
import numpy as np
import tensorboardX
import tensorflow_datasets as tfds
from absl import app, logging
from ml_collections import config_flags

from attention_jax import checkpoint, decoding, evaluation, training, viz
from attention_jax.data import batching, tokenizers, translation
from attention_jax.models import seq2seq_rnn, transformer

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/translate.py:transformer")

LOCAL_LAYOUTS = ("multi30k", "bible_tsv")


def load_pairs(config, split):
    """(source, target) sentences of a split of the configured dataset."""
    d = config.data
    if d.dataset in LOCAL_LAYOUTS:
        return translation.load_pairs(
            d.manual_dir,
            d.dataset,
            d.source_lang,
            d.target_lang,
            split,
            data_dir=f"{d.output_dir}/tfds",
        )
    # A TFDS catalogue dataset such as wmt14_translate/de-en: downloads once, needs internet.
    builder = tfds.builder(d.dataset, data_dir=f"{d.output_dir}/tfds")
    builder.download_and_prepare(file_format="array_record")
    source = builder.as_data_source(split)
    text = lambda x: x.decode() if isinstance(x, bytes) else str(x)  # noqa: E731
    return [(text(ex[d.source_lang]), text(ex[d.target_lang])) for ex in source]


def joint_tokenizer(config, train_pairs) -> tokenizers.SentencePieceTokenizer:
    """One SentencePiece model for both languages (shared embeddings need a joint vocabulary),
    trained once per corpus and settings and reused from `output_dir` afterwards."""
    d = config.data
    digest = hashlib.sha256(json.dumps([d.vocab_size, d.lowercase, d.seed]).encode())
    for pair in train_pairs:
        digest.update("\t".join(pair).encode())
    model_dir = pathlib.Path(d.output_dir) / f"translation_spm-{digest.hexdigest()[:16]}"
    if not (model_dir / tokenizers.SENTENCEPIECE_FILENAME).is_file():
        with tempfile.TemporaryDirectory(dir=d.output_dir) as tmp:
            text = pathlib.Path(tmp) / "train.txt"
            text.write_text("".join(f"{s}\n{t}\n" for s, t in train_pairs), encoding="utf-8")
            tokenizers.train_sentencepiece(
                [text], pathlib.Path(tmp) / "spm", d.vocab_size, lowercase=d.lowercase, seed=d.seed
            )
            shutil.move(pathlib.Path(tmp) / "spm", model_dir)  # appears complete or not at all
    return tokenizers.SentencePieceTokenizer(model_dir / tokenizers.SENTENCEPIECE_FILENAME)


def make_model(config, vocab_size):
    overrides = {k: v for k, v in config.model_overrides.items() if v is not None}
    overrides["dtype"] = config.train.dtype
    if config.model == "transformer":
        preset = getattr(transformer.TransformerConfig, config.model_size)
        return transformer.Transformer(preset(vocab_size, **overrides))
    preset = getattr(seq2seq_rnn.Seq2SeqRNNConfig, config.model_size)
    return seq2seq_rnn.Seq2SeqRNN(preset(vocab_size, **overrides))


def init_args(batch):
    return batch["inputs"], batch["targets"][:, :-1]


def pair_batches(tokenizer, pairs, batch_size, seed, *, shuffle, max_len=None, **shard):
    """`PairBatches` of the encoded pairs; with `max_len`, pairs with a longer side are dropped.

    [CLS] and [SEP], which every SentencePiece model of this project reserves, serve as BOS
    and EOS.
    """
    sources = tokenizer.encode_batch([s for s, _ in pairs])
    targets = tokenizer.encode_batch([t for _, t in pairs])
    if max_len is not None:
        kept = [
            (s, t) for s, t in zip(sources, targets, strict=True) if max(len(s), len(t)) < max_len
        ]
        sources, targets = [s for s, _ in kept], [t for _, t in kept]
    return batching.PairBatches(
        sources,
        targets,
        batch_size,
        seed,
        bos_id=tokenizer.cls_id,
        eos_id=tokenizer.sep_id,
        shuffle=shuffle,
        **shard,
    )


def start_decoding(model, params, src_BS, max_len):
    if isinstance(model, transformer.Transformer):
        return transformer.start_decoding(model, params, src_BS, max_len)
    return seq2seq_rnn.start_decoding(model, params, src_BS)


def until_eos(ids, eos_id):
    ids = [int(i) for i in ids]
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


def translate(config, model, params, tokenizer, batches) -> list[list[int]]:
    """Beam search over every batch: the best hypothesis of each real pair, without EOS."""

    @functools.partial(jax.jit, static_argnums=2)
    def decode(params, src_BS, max_len):
        step_fn, state = start_decoding(model, params, src_BS, max_len)
        sequences_BWL, _ = decoding.beam_search(
            step_fn,
            state,
            beam_size=config.eval.beam_size,
            bos_id=tokenizer.cls_id,
            eos_id=tokenizer.sep_id,
            max_len=max_len,
            alpha=config.eval.alpha,
        )
        return sequences_BWL[:, 0]

    hypotheses = []
    for batch in batches:
        max_len = batch["inputs"].shape[1] + config.eval.extra_decode_len
        best_BL = np.asarray(decode(params, batch["inputs"], max_len))
        hypotheses += [until_eos(row, tokenizer.sep_id) for row in best_BL]
    return hypotheses[: batches.num_pairs]


def alignment(model, params, src_S, tgt_in_T):
    """Attention weights of one pair, teacher-forced: (T, S) for the RNN, (N, T, S) for the
    Transformer's last decoder layer."""
    src_1S, tgt_in_1T = np.asarray(src_S)[None], np.asarray(tgt_in_T)[None]
    if isinstance(model, seq2seq_rnn.Seq2SeqRNN):
        _, weights_1TS = model.apply({"params": params}, src_1S, tgt_in_1T, return_weights=True)
        return np.asarray(weights_1TS[0])
    c = dataclasses.replace(model.config, sow_attention_weights=True)
    _, state = transformer.Transformer(c).apply(
        {"params": params}, src_1S, tgt_in_1T, mutable=["intermediates"]
    )
    last = state["intermediates"]["decoder"][f"layers_{c.num_decoder_layers - 1}"]
    return np.asarray(last["cross_attention"]["attention_weights"][0][0])


def plot_alignments(config, model, params, tokenizer, pairs, hypotheses, workdir, step):
    """Heatmaps of source pieces × the model's own output pieces, as PNG and in TensorBoard."""
    out_dir = workdir / "alignments"
    out_dir.mkdir(exist_ok=True)
    writer = tensorboardX.SummaryWriter(str(workdir / "tensorboard"))
    pieces = lambda ids: [tokenizer.id_to_token(i) for i in ids]  # noqa: E731
    for i in range(min(config.eval.num_alignment_plots, len(pairs))):
        src = tokenizer.encode(pairs[i][0]) + [tokenizer.sep_id]
        hyp = hypotheses[i] + [tokenizer.sep_id]
        weights = alignment(model, params, src, [tokenizer.cls_id] + hyp[:-1])
        path = out_dir / f"{config.eval.split}_{i}.png"
        plot = viz.plot_attention if weights.ndim == 2 else viz.plot_attention_heads
        plot(weights, pieces(src), pieces(hyp), path, title=pairs[i][0])
        writer.add_image(f"alignment/{i}", matplotlib.image.imread(path), step, dataformats="HWC")
    writer.close()


def default_workdir(config) -> str:
    if config.model == "transformer":
        return f"runs/translate_transformer_{config.model_size}"
    return f"runs/translate_rnn_{config.model_size}_{config.model_overrides.attention}"


def run(config) -> dict:
    """Trains (resuming if the workdir has checkpoints), decodes and scores; returns results."""
    if not config.train.workdir:
        config.train.workdir = default_workdir(config)
    workdir = pathlib.Path(config.train.workdir)
    pathlib.Path(config.data.output_dir).mkdir(parents=True, exist_ok=True)
    train_pairs = load_pairs(config, "train")
    eval_pairs = load_pairs(config, config.eval.split)
    tokenizer = joint_tokenizer(config, train_pairs)
    model = make_model(config, tokenizer.vocab_size)

    shard = dict(shard_index=jax.process_index(), shard_count=jax.process_count())
    train_data = pair_batches(
        tokenizer,
        train_pairs,
        config.train.batch_size,
        config.data.seed,
        shuffle=True,
        max_len=config.data.max_len,
        **shard,
    )
    eval_data = functools.partial(
        pair_batches, tokenizer, eval_pairs, config.train.batch_size, 0, shuffle=False, **shard
    )
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(tokenizer.path, workdir / tokenizers.SENTENCEPIECE_FILENAME)

    start = time.perf_counter()
    training.train(config.train, model, transformer.loss_fn, train_data, init_args, eval_data)
    train_seconds = time.perf_counter() - start
    if jax.process_index() != 0:
        return {}

    restored = checkpoint.load(workdir)
    start = time.perf_counter()
    batches = pair_batches(
        tokenizer, eval_pairs, config.eval.batch_size, 0, shuffle=False, shard_count=1
    )
    hypotheses = translate(config, model, restored.params, tokenizer, batches)
    decode_seconds = time.perf_counter() - start
    texts = [tokenizer.decode(h) for h in hypotheses]
    bleu = evaluation.corpus_bleu(
        texts, [t for _, t in eval_pairs], lowercase=config.data.lowercase
    )
    plot_alignments(
        config, model, restored.params, tokenizer, eval_pairs, hypotheses, workdir, restored.step
    )
    (workdir / f"{config.eval.split}.hyp.txt").write_text("".join(f"{t}\n" for t in texts))
    results = {
        "bleu": bleu.score,
        "bleu_signature": bleu.signature,
        "split": config.eval.split,
        "sentences": len(eval_pairs),
        "steps": int(restored.step),
        "train_seconds": round(train_seconds, 1),
        "decode_seconds": round(decode_seconds, 1),
    }
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save and restore at INFO.
    config = _CONFIG.value
    results = run(config)
    if results:
        print(
            f"\n{config.model} ({config.model_size}"
            f"{', ' + config.model_overrides.attention if config.model == 'rnn' else ''}), "
            f"{results['steps']} steps: BLEU {results['bleu']:.2f} on {results['sentences']} "
            f"{results['split']} sentences (beam {config.eval.beam_size}; "
            f"{results['bleu_signature']})\n"
            f"Training {results['train_seconds']:.0f} s, decoding "
            f"{results['decode_seconds']:.0f} s. Outputs, alignments and TensorBoard events: "
            f"{config.train.workdir}"
        )


if __name__ == "__main__":
    app.run(main)
