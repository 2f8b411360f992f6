"""Timing implementations against each other on a CPU: one process each, timed in turn.

Each implementation, and the jitted matmul that MFU divides by, lives in its own spawned process,
built and compiled one after another, so allocators and thread pools are never shared and no
compilation competes with another. Then come rounds: in each, every worker runs its block of
timed calls while the others wait blocked on a pipe, with a pause between blocks longer than any
thread pool spins (XLA's Eigen pool, libgomp's spin count), and the order rotates every round.
The workers start with OMP_WAIT_POLICY=PASSIVE (unless it is set), so PyTorch's OpenMP threads
sleep as soon as their work ends rather than spin into the next block.

A worker class is built in its process as `cls(*args)` and has a `name`, `threads` (its thread
settings, for the table) and `run(i)`: one timed call, whose output for i = 0 (the call that
compiles) is handed back.

`alternate` is the same rotation for calls that share one process.
"""

import multiprocessing
import os
import statistics
import time
import traceback

import jax
import jax.numpy as jnp

PAUSE_S = 0.5  # between blocks: libgomp and Eigen threads stop spinning well within it


def xla_threads():
    cores = len(os.sched_getaffinity(0))
    return f"XLA CPU: {jax.local_device_count()} device, {cores} intra-op threads (its default)"


def torch_threads(torch):
    backend = torch.__config__.parallel_info().splitlines()[-1].strip()
    return f"PyTorch: {torch.get_num_threads()} intra-op threads ({backend})"


class MatmulPeak:
    """One jitted N × N float32 matmul per call: the FLOP/s that MFU divides by."""

    name = "matmul peak"

    def __init__(self, N):
        self.a = jax.random.normal(jax.random.key(0), (N, N), jnp.float32)
        self.matmul = jax.jit(jnp.matmul)
        self.threads = xla_threads()

    def run(self, i):
        self.matmul(self.a, self.a).block_until_ready()


def serve(cls, args, connection):
    """Worker: build `cls(*args)`, make the first (compiling) call, then time blocks of calls."""
    try:
        start = time.perf_counter()
        runner = cls(*args)
        first = runner.run(0)
        connection.send(("ready", (time.perf_counter() - start, first, runner.threads)))
    except Exception as error:  # noqa: BLE001 - a peer that fails is reported, not fatal
        traceback.print_exc()
        connection.send(("failed", f"{type(error).__name__}: {str(error).splitlines()[0]}"))
        return
    step = 1
    while (calls := connection.recv()) is not None:
        timings = []
        for _ in range(calls):
            wall, cpu = time.perf_counter(), time.process_time()
            runner.run(step)
            timings.append((time.perf_counter() - wall, time.process_time() - cpu))
            step += 1
        connection.send(timings)


def rotated(items, r):
    """`items` in the order of round r: each round starts one place further on."""
    return items[r % len(items) :] + items[: r % len(items)]


def alternate(calls, rounds):
    """{name: seconds of each call} of `calls` ({name: function of no arguments}) in one process:
    `rounds` rounds in rotating order, each result waited for."""
    seconds = {name: [] for name in calls}
    for r in range(rounds):
        for name in rotated(list(calls), r):
            start = time.perf_counter()
            jax.block_until_ready(calls[name]())
            seconds[name].append(time.perf_counter() - start)
    return seconds


def run_phase(workers, rounds, calls):
    """({class: (timings, first output, threads)}, {name: error}) of one worker per class.

    Args:
      workers: {class: the arguments it is built with}.
      calls: {class: timed calls per block}.

    Returns:
      timings: a (wall, process CPU) pair of seconds per timed call.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read by libgomp when torch loads
    context = multiprocessing.get_context("spawn")
    started, ready, errors = {}, {}, {}
    for cls, args in workers.items():  # one at a time, so no compilation competes with another
        connection, child = context.Pipe()
        process = context.Process(target=serve, args=(cls, args, child))
        process.start()
        try:
            status, value = connection.recv()
        except EOFError:
            status, value = "failed", f"worker exited with status {process.exitcode}"
        if status == "ready":
            print(f"  {cls.name}: built and compiled in {value[0]:.0f} s", flush=True)
            started[cls] = (process, connection)
            ready[cls] = value
        else:
            errors[cls.name] = value
            process.join()
    timings = {cls: [] for cls in started}
    for r in range(rounds):
        for cls in rotated(list(started), r):
            time.sleep(PAUSE_S)
            _, connection = started[cls]
            connection.send(calls[cls])
            timings[cls] += connection.recv()
        print(f"  round {r + 1}/{rounds} done", flush=True)
    for process, connection in started.values():
        connection.send(None)
        process.join()
    return {cls: (timings[cls], *ready[cls][1:]) for cls in started}, errors


def spread(seconds):
    """(median, "min–max") of a list of seconds."""
    return statistics.median(seconds), f"{min(seconds):.2f}–{max(seconds):.2f}"


def shared_cells(results, units_per_call, ours_cls, rate_format=",.0f"):
    """({class: units/s}, {class: its row's first cells}): implementation, s/call median
    (min–max), units/s, ours ÷ it, CPU s/call."""
    rates = {
        cls: units_per_call / statistics.median(wall for wall, _ in timings)
        for cls, (timings, *_) in results.items()
    }
    ours = rates.get(ours_cls)
    cells = {}
    for cls, (timings, *_) in results.items():
        median, minmax = spread([wall for wall, _ in timings])
        cpu = statistics.median(c for _, c in timings)
        ratio = f"{ours / rates[cls]:.2f}×" if ours else "—"
        cells[cls] = (
            f"| {cls.name} | {median:.2f} ({minmax}) | {rates[cls]:{rate_format}} | {ratio} "
            f"| {cpu:.1f} |"
        )
    return rates, cells


def matmul_peak(results, N):
    """(median FLOP/s, the first three cells of its row) of the `MatmulPeak` taken from `results`:
    the matmul's s/call median (min–max) and its GFLOP/s median (min–max)."""
    seconds = [wall for wall, _ in results.pop(MatmulPeak)[0]]
    flop = 2 * N**3
    median, minmax = spread(seconds)
    lowest, highest = (flop / s / 1e9 for s in (max(seconds), min(seconds)))
    return flop / median, (
        f"| matmul {N}³ float32, jitted: the MFU peak | {median:.2f} ({minmax}) "
        f"| {flop / median / 1e9:.0f} GFLOP/s ({lowest:.0f}–{highest:.0f}) |"
    )


def conditions(rounds, load_before, *phases):
    """The paragraphs a results file gives on how it was timed, for `run_phase` results."""
    threads = sorted({result[2] for results, _ in phases for result in results.values()})
    return [
        "Each implementation in its own process, timed while the others are idle, "
        f"{rounds} rounds in rotating order, {PAUSE_S} s idle between blocks. 1-minute load "
        f"average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (a shared machine).",
        "",
        "Threads: " + "; ".join(threads) + f"; OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} "
        f"in every worker; XLA_FLAGS {os.environ.get('XLA_FLAGS', 'unset')}.",
    ]
