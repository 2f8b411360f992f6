"""Transformer decoding speed with and without the decoder self-attention key/value cache.

The small Multi30k-sized Transformer (`TransformerConfig.small`: N=3, d_model=256, h=4, d_ff=1024)
with a joint vocabulary of 8,000 and random weights generates exactly L = 64 tokens (EOS is never
emitted, so every run does the same work) for B sources of 24 tokens, greedily (beam 1) and with
beam search (beam 4). Cached: one token per step through the cache. Recomputed: every step runs
the decoder over the whole prefix, padded to L, and projects every position to the vocabulary,
as a loop calling `model.apply(src, prefix)` would. Tokens/s counts the tokens of every beam
(B × beam × L per decode); time is the median wall time of a few jitted runs after compilation,
with the two variants interleaved so that load from other processes hits both alike.

    .venv/bin/python benchmarks/decode.py [--batch_size 4] [--repeats 3]
"""

import argparse
import os
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp

from attention_jax import decoding
from attention_jax.models import transformer

RESULTS = pathlib.Path(__file__).parent / "results" / "decode.md"
VOCAB, SOURCE_LEN, MAX_LEN, BOS = 8000, 24, 64, 1
NEVER = -1  # an EOS id no token has, so every decode runs to MAX_LEN


def decoder(model, beam_size, use_cache):
    """Jitted (params, src_BS) -> tokens for one decoding variant."""

    def run(params, src_BS):
        step_fn, state = model.start_decoding(params, src_BS, MAX_LEN, use_cache=use_cache)
        kwargs = dict(bos_id=BOS, eos_id=NEVER, max_len=MAX_LEN)
        if beam_size == 1:
            return decoding.greedy(step_fn, state, **kwargs)
        return decoding.beam_search(step_fn, state, beam_size=beam_size, **kwargs)[0]

    return jax.jit(run)


def measure(model, params, src_BS, beam_size, repeats):
    """{use_cache: median seconds} for one beam size."""
    runs = {use_cache: decoder(model, beam_size, use_cache) for use_cache in (True, False)}
    outputs = {c: jax.block_until_ready(run(params, src_BS)) for c, run in runs.items()}
    if beam_size == 1 and not bool(jnp.all(outputs[True] == outputs[False])):
        raise RuntimeError("cached and recomputed greedy decoding disagree")
    times = {use_cache: [] for use_cache in runs}
    for _ in range(repeats):
        for use_cache, run in runs.items():
            start = time.perf_counter()
            jax.block_until_ready(run(params, src_BS))
            times[use_cache].append(time.perf_counter() - start)
    return {use_cache: statistics.median(t) for use_cache, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=4, help="sources per decode (B)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant")
    args = parser.parse_args()

    config = transformer.TransformerConfig.small(VOCAB)
    model = transformer.Transformer(config)
    src_BS = jax.random.randint(jax.random.key(0), (args.batch_size, SOURCE_LEN), 3, VOCAB)
    tgt_BT = jnp.full((args.batch_size, MAX_LEN), BOS)
    params = jax.jit(model.init)(jax.random.key(1), src_BS, tgt_BT)["params"]

    load_before = os.getloadavg()[0]
    rows = []
    for beam_size in (1, 4):
        seconds = measure(model, params, src_BS, beam_size, args.repeats)
        tokens = args.batch_size * beam_size * MAX_LEN
        cached, recomputed = tokens / seconds[True], tokens / seconds[False]
        rows.append(
            f"| {beam_size} | {MAX_LEN} | {seconds[True]:.3f} | {seconds[False]:.3f} | "
            f"{cached:,.0f} | {recomputed:,.0f} | {cached / recomputed:.1f}× |"
        )
    load_after = os.getloadavg()[0]

    table = "\n".join(
        [
            "| beam | L | cached time (s) | recomputed time (s) | cached tokens/s "
            "| recomputed tokens/s | cache speed-up |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    devices = jax.devices()
    text = (
        "# Transformer decoding: key/value cache vs recomputation\n\n"
        f"`make bench-decode`. `TransformerConfig.small({VOCAB})` (N=3, d_model=256, h=4, "
        f"d_ff=1024), random weights, float32, B = {args.batch_size} sources of {SOURCE_LEN} "
        f"tokens, exactly L = {MAX_LEN} generated tokens per beam (EOS never emitted). Tokens/s "
        f"counts every beam's tokens. Time: median of {args.repeats} runs after compilation "
        f"(variants interleaved). Device: {len(devices)} × {devices[0].device_kind}, "
        f"{os.cpu_count()} CPU cores, 1-minute load average {load_before:.1f} before / "
        f"{load_after:.1f} after (shared machine).\n\n{table}\n"
    )
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
