"""Forward+backward time and peak temporary memory of dot-product attention implementations.

Compares our `xla` (einsum reference) and `chunked` (FlashAttention-style online softmax)
implementations with `jax.nn.dot_product_attention` (its default xla implementation) on self-
attention with B = 1, N = 8 heads, H = 64, float32, no mask. Memory is the compiled executable's
`memory_analysis().temp_size_in_bytes`; time is the median wall time of a few jitted runs after
compilation. Long sequences are only compiled (memory column) where running them would take too
long or too much memory on a small CPU machine.

    .venv/bin/python benchmarks/attention.py [--lengths 512 1024 ...] [--repeats 3]

B batch, T sequence length, N heads, H head dim.
"""

import argparse
import os
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp

from attention_jax import ops
from attention_jax.ops import chunked

RESULTS = pathlib.Path(__file__).parent / "results" / "attention.md"
B, N, H = 1, 8, 64

IMPLEMENTATIONS = {
    "xla": lambda q, k, v: ops.dot_product_attention(q, k, v, implementation="xla"),
    "chunked": lambda q, k, v: ops.dot_product_attention(q, k, v, implementation="chunked"),
    "jax.nn": lambda q, k, v: jax.nn.dot_product_attention(q, k, v),
}


def forward_backward(attention):
    """Jitted (q, k, v, dout) -> (dq, dk, dv): one forward and one backward pass."""

    def loss(q_BTNH, k_BTNH, v_BTNH, dout_BTNH):
        return jnp.vdot(attention(q_BTNH, k_BTNH, v_BTNH), dout_BTNH)

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def measure(T, timed, repeats):
    """{name: (median seconds or None, temporary bytes)} for every implementation at length T.

    The timed runs interleave the implementations, so that load from other processes on the
    machine spreads over all of them alike.
    """
    shape = jax.ShapeDtypeStruct((B, T, N, H), jnp.float32)
    compiled = {
        name: forward_backward(attention).lower(shape, shape, shape, shape).compile()
        for name, attention in IMPLEMENTATIONS.items()
    }
    temp_bytes = {name: c.memory_analysis().temp_size_in_bytes for name, c in compiled.items()}
    if not timed:
        return {name: (None, temp_bytes[name]) for name in compiled}
    args = jax.random.normal(jax.random.key(T), (4, B, T, N, H), jnp.float32)
    times = {name: [] for name in compiled}
    for _ in range(repeats + 1):  # the first round warms up
        for name, c in compiled.items():
            start = time.perf_counter()
            jax.block_until_ready(c(*args))
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name][1:]), temp_bytes[name]) for name in compiled}


HEADER = (
    ["T"]
    + [f"{name} time (s)" for name in IMPLEMENTATIONS]
    + [f"{name} temp (MiB)" for name in IMPLEMENTATIONS]
    + ["chunked/xla time", "chunked/xla temp"]
)


def table_row(T, results):
    """One markdown row: times, temporary memory and the chunked/xla ratios."""
    seconds = [results[name][0] for name in IMPLEMENTATIONS]
    mebibytes = [results[name][1] / 2**20 for name in IMPLEMENTATIONS]
    xla, chunked_ = results["xla"], results["chunked"]
    time_ratio = "—" if None in (xla[0], chunked_[0]) else f"{chunked_[0] / xla[0]:.2f}"
    cells = [str(T)] + ["—" if s is None else f"{s:.3f}" for s in seconds]
    cells += [f"{m:,.1f}" for m in mebibytes]
    cells += [time_ratio, f"{chunked_[1] / xla[1]:.3f} (1/{xla[1] / chunked_[1]:.3g})"]
    return "| " + " | ".join(cells) + " |"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384]
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per cell (median)")
    parser.add_argument(
        "--max-timed-length", type=int, default=4096, help="longer sequences are compile-only"
    )
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    print("\n".join(lines), flush=True)
    for T in args.lengths:
        lines.append(table_row(T, measure(T, T <= args.max_timed_length, args.repeats)))
        print(lines[-1], flush=True)

    report = "\n\n".join(
        [
            "# Dot-product attention: forward + backward on CPU",
            f"`make bench-attention`. B = {B}, N = {N}, H = {H}, float32, self-attention (S = T), "
            f"no mask; chunked blocks {chunked.BLOCK_Q}×{chunked.BLOCK_K}. "
            f"Time: median of {args.repeats} runs after compilation (implementations "
            f"interleaved); temp: the compiled executable's "
            f"`memory_analysis().temp_size_in_bytes`. T > {args.max_timed_length}: compiled "
            f"only, not run (—). Machine: {os.cpu_count()} CPU cores, 1-minute load average "
            f"{load_before:.1f} before / {os.getloadavg()[0]:.1f} after (shared machine).",
            "\n".join(lines),
        ]
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
