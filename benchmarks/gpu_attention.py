"""cuDNN, xla and chunked dot-product attention on one GPU: forward + backward in bfloat16.

Causal self-attention with B = 1, N = 16 query heads sharing K = 4 key/value heads, H = 128,
bfloat16, at T = 512 … 16384, through `ops.dot_product_attention(implementation=...)`. For each
implementation and length: the median wall time of a few jitted forward+backward runs after
compilation (implementations interleaved), the compiled executable's temporary memory
(`memory_analysis().temp_size_in_bytes`), and the largest difference of the output and of the
q, k, v gradients to xla's, relative to xla's largest value (equal: ≤ 1e-2). A length the device
cannot hold is reported as out of memory. Needs JAX's CUDA build
(`python attention_jax/accelerator.py install cuda`); takes a few minutes on one H200.

    .venv/bin/python benchmarks/gpu_attention.py [--lengths 512 1024 ...] [--repeats 5]

B batch, T sequence length, N query heads, K key/value heads, H head dim.
"""

import argparse
import functools
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp

from attention_jax import ops
from attention_jax.ops import chunked

RESULTS = pathlib.Path(__file__).parent / "results" / "gpu_attention.md"
B, N, K, H = 1, 16, 4, 128
IMPLEMENTATIONS = ("xla", "cudnn", "chunked")
EQUAL = 1e-2


def forward_backward(implementation):
    """Jitted (q, k, v, dout) -> (out, (dq, dk, dv)) of causal attention."""
    attention = functools.partial(
        ops.dot_product_attention, is_causal=True, implementation=implementation
    )

    def run(q_BTNH, k_BTKH, v_BTKH, dout_BTNH):
        out_BTNH, vjp = jax.vjp(attention, q_BTNH, k_BTKH, v_BTKH)
        return out_BTNH, vjp(dout_BTNH)

    return jax.jit(run)


def compile_and_run(implementation, args):
    """(compiled, its first result), or None when the device runs out of memory."""
    try:
        compiled = forward_backward(implementation).lower(*args).compile()
        return compiled, jax.block_until_ready(compiled(*args))
    except jax.errors.JaxRuntimeError as error:
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        return None


def relative_difference(result, reference):
    """max |result − reference| / max |reference| over the output and the three gradients."""
    leaves = zip(jax.tree.leaves(result), jax.tree.leaves(reference), strict=True)
    return max(
        float(jnp.max(jnp.abs(x.astype(jnp.float32) - r.astype(jnp.float32))))
        / float(jnp.max(jnp.abs(r.astype(jnp.float32))))
        for x, r in leaves
    )


def measure(T, repeats):
    """{implementation: (median seconds, temp bytes, difference to xla) or None (out of memory)}."""
    keys = jax.random.split(jax.random.key(T), 4)
    shapes = [(B, T, N, H), (B, T, K, H), (B, T, K, H), (B, T, N, H)]
    args = [
        jax.random.normal(key, shape, jnp.bfloat16) for key, shape in zip(keys, shapes, strict=True)
    ]
    runs = {name: compile_and_run(name, args) for name in IMPLEMENTATIONS}
    ran = {name: run for name, run in runs.items() if run is not None}
    times = {name: [] for name in ran}
    for _ in range(repeats):
        for name, (compiled, _) in ran.items():
            start = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            times[name].append(time.perf_counter() - start)
    reference = ran["xla"][1] if "xla" in ran else None
    results = dict.fromkeys(IMPLEMENTATIONS)
    for name, (compiled, result) in ran.items():
        difference = None if reference is None else relative_difference(result, reference)
        temp_bytes = compiled.memory_analysis().temp_size_in_bytes
        results[name] = (statistics.median(times[name]), temp_bytes, difference)
    return results


HEADER = (
    ["T"]
    + [f"{name} time (ms)" for name in IMPLEMENTATIONS]
    + [f"{name} temp (MiB)" for name in IMPLEMENTATIONS]
    + [f"{name} vs xla" for name in IMPLEMENTATIONS[1:]]
)


def table_row(T, results):
    """One markdown row: times, temporary memory, and differences to xla (✓ when ≤ 1e-2)."""
    cells = [str(T)]
    for column, unit in ((0, 1e3), (1, 2**-20)):
        cells += ["OOM" if r is None else f"{r[column] * unit:,.1f}" for r in results.values()]
    for name in IMPLEMENTATIONS[1:]:
        difference = None if results[name] is None else results[name][2]
        mark = "✓" if difference is not None and difference <= EQUAL else "✗"
        cells.append("—" if difference is None else f"{difference:.1e} {mark}")
    return "| " + " | ".join(cells) + " |"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384]
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell (median)")
    args = parser.parse_args()
    if jax.default_backend() != "gpu":
        raise SystemExit(f"gpu_attention.py needs a GPU; JAX's backend is {jax.default_backend()}")

    device = jax.devices()[0].device_kind
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    print(f"{device}\n" + "\n".join(lines), flush=True)
    for T in args.lengths:
        lines.append(table_row(T, measure(T, args.repeats)))
        print(lines[-1], flush=True)

    report = "\n\n".join(
        [
            f"# Dot-product attention: forward + backward on {device}",
            f"`benchmarks/gpu_attention.py`, JAX {jax.__version__}. Causal self-attention, "
            f"B = {B}, N = {N} query heads, K = {K} key/value heads, H = {H}, bfloat16; chunked "
            f"blocks {chunked.BLOCK_Q}×{chunked.BLOCK_K}. Time: median of {args.repeats} runs "
            "after compilation (implementations interleaved); temp: the compiled executable's "
            "`memory_analysis().temp_size_in_bytes`; vs xla: the largest difference of the "
            "output and the q, k, v gradients to xla's, relative to xla's largest value "
            f"(✓: ≤ {EQUAL:g}). OOM: the device could not hold it.",
            "\n".join(lines),
        ]
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
