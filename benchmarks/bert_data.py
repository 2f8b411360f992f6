"""Throughput of the BERT pretraining data pipeline on the shipped corpus (World English Bible).

Stages, each timed on its own: SentencePiece training; reading and tokenizing the corpus;
example creation (google-research/bert's recipe, pure Python, one core); the whole
`prepare_pretraining_data` (all of the above plus writing the TFDS array_record dataset); and
Grain batching of the prepared train split (random access, shuffled, stacked), with our direct
record decoding (`ExampleSource`) next to TFDS's generic decoder. Compare the batching rate with
the examples/s the train step consumes: batching runs during training, preparation once.

    .venv/bin/python benchmarks/bert_data.py [--dupe-factor 2] [--batch-sizes 32 256]

L max_seq_length, P max_predictions_per_seq, B batch size.
"""

import argparse
import os
import pathlib
import platform
import tempfile
import time

from attention_jax.data import bert_pretraining, corpus, tfds_bert, tokenizers
from attention_jax.data.batching import pretraining_batches

RESULTS = pathlib.Path(__file__).parent / "results" / "bert_data.md"


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def batching_rate(source, batch_size, num_threads, seconds):
    """Examples/s of shuffled batches from `source`, after a warm-up batch."""
    iterator = pretraining_batches(source, batch_size, seed=0, num_threads=num_threads)
    next(iterator)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        next(iterator)
        count += batch_size
    return count / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--max-predictions", type=int, default=20)
    parser.add_argument("--dupe-factor", type=int, default=2, help="for the full preparation")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seconds", type=float, default=3.0, help="per batching measurement")
    args = parser.parse_args()
    L, P = args.max_seq_length, args.max_predictions
    files = corpus.list_corpus_files(corpus.DEFAULT_CORPUS)
    rows = []  # (stage, setting, items/s, seconds)

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer, seconds = timed(
            lambda: tokenizers.train_sentencepiece(files, tmp, args.vocab_size)
        )
        rows.append(("SentencePiece training", f"BPE, {tokenizer.vocab_size} pieces", "", seconds))
        texts, read_seconds = timed(lambda: corpus.read_documents(files))
        documents, seconds = timed(lambda: bert_pretraining.tokenize_documents(texts, tokenizer))
        num_lines = sum(map(len, texts))
        num_tokens = sum(len(s) for d in documents for s in d)
        rows.append(
            (
                "read + tokenize",
                f"{num_lines:,} lines, {num_tokens:,} tokens",
                f"{num_lines / (read_seconds + seconds):,.0f} lines/s",
                read_seconds + seconds,
            )
        )
        for whole_word in (False, True):
            options = bert_pretraining.PretrainingOptions(
                max_seq_length=L,
                max_predictions_per_seq=P,
                dupe_factor=1,
                whole_word_masking=whole_word,
            )
            features, seconds = timed(
                lambda options=options: list(
                    bert_pretraining.create_pretraining_features(documents, tokenizer, options, 0)
                )
            )
            rows.append(
                (
                    "example creation",
                    f"L={L}, P={P}, dupe 1{', whole-word' if whole_word else ''}",
                    f"{len(features) / seconds:,.0f} examples/s",
                    seconds,
                )
            )

    with tempfile.TemporaryDirectory() as output_dir:
        (train, eval_, _), seconds = timed(
            lambda: tfds_bert.prepare_pretraining_data(
                corpus.DEFAULT_CORPUS,
                output_dir,
                vocab_size=args.vocab_size,
                max_seq_length=L,
                max_predictions_per_seq=P,
                dupe_factor=args.dupe_factor,
            )
        )
        num_examples = len(train) + len(eval_)
        rows.append(
            (
                "prepare_pretraining_data (all above + TFDS write)",
                f"dupe {args.dupe_factor}: {len(train):,} train + {len(eval_):,} eval",
                f"{num_examples / seconds:,.0f} examples/s",
                seconds,
            )
        )
        for decoder, source in (("ours", train), ("TFDS", train.tfds_source)):
            for B in args.batch_sizes:
                for threads in args.threads:
                    rate = batching_rate(source, B, threads, args.seconds)
                    setting = f"B={B}, {threads} thread(s), {decoder} decoding"
                    rows.append(("Grain batches", setting, f"{rate:,.0f} examples/s", None))
                    print(f"{setting}: {rate:,.0f} examples/s", flush=True)

    lines = ["| stage | setting | rate | wall time (s) |", "|---|---|---|---|"]
    for stage, setting, rate, seconds in rows:
        wall = "—" if seconds is None else f"{seconds:.2f}"
        lines.append(f"| {stage} | {setting} | {rate or '—'} | {wall} |")
    report = "\n\n".join(
        [
            "# BERT pretraining data pipeline",
            f"Shipped corpus (World English Bible, {len(documents):,} chapters); "
            f"{platform.machine()}, {os.cpu_count()} CPU(s), shared with other jobs while "
            "measured, so rates vary between runs. Grain: shuffled random access over the "
            "array_record train split, stacked to int32/float32 arrays.",
            "\n".join(lines),
        ]
    )
    print(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report + "\n")


if __name__ == "__main__":
    main()
