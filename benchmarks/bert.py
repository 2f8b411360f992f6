"""BERT pre-training step throughput: ours against Hugging Face Flax and PyTorch, in one run.

Every implementation runs the same step on the same batch: MLM + NSP loss (dropout on, as in
pre-training), gradients, AdamW (lr 1e-4, weight decay 0.01) — ours with `BertForPreTraining`
and optax, Hugging Face's `FlaxBertForPreTraining` with its own jitted step and optax, and
`transformers.BertForPreTraining` with `torch.optim.AdamW`. Sequences of 128 tokens with 20
masked positions (google-research/bert's max_predictions_per_seq for 128) and the 30,522-token
uncased WordPiece vocabulary.

Each implementation runs in its own process; the timed steps interleave them and a large jitted
float32 matmul, so load from other processes on the machine falls on all of them alike; each
figure is a median. MFU is `flops_per_example` (the matmul FLOPs the model needs, MLM head at
the masked positions only) × sequences/s ÷ the matmul's achieved FLOP/s. The Hugging Face
models compute the MLM head at every position, work that this count does not credit them with.

    .venv/bin/python benchmarks/bert.py [--shapes mini base] [--steps 8 3]

B batch, T sequence length, P masked predictions, V vocabulary.
"""

import argparse
import multiprocessing
import os
import pathlib
import platform
import statistics
import time
import traceback

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from attention_jax.interop.hf_bert import config_to_hf
from attention_jax.models.bert import BertConfig, BertForPreTraining, flops_per_example
from attention_jax.tasks.bert_pretraining import pretraining_loss

RESULTS = pathlib.Path(__file__).parent / "results" / "bert.md"
VOCAB, T, P = 30522, 128, 20
LEARNING_RATE, WEIGHT_DECAY = 1e-4, 0.01
SHAPES = {  # name: (config, batch size, timed steps)
    "mini": (BertConfig.mini(VOCAB), 16, 8),
    "base": (BertConfig.base(VOCAB), 8, 5),
}
MATMUL_N = 4096


def make_batch(B, seed=0):
    """google-research/bert features plus Hugging Face's labels_BT (-100 where not masked)."""
    rng = np.random.default_rng(seed)
    positions_BP = np.sort(
        np.stack([rng.choice(np.arange(1, T), P, replace=False) for _ in range(B)]), -1
    )
    ids_BP = rng.integers(1000, VOCAB, (B, P))
    labels_BT = np.full((B, T), -100)
    np.put_along_axis(labels_BT, positions_BP, ids_BP, axis=1)
    return {
        "input_ids": rng.integers(1000, VOCAB, (B, T)).astype(np.int32),
        "segment_ids": (np.arange(T)[None] >= T // 2).repeat(B, 0).astype(np.int32),
        "input_mask": np.ones((B, T), np.int32),
        "masked_lm_positions": positions_BP.astype(np.int32),
        "masked_lm_ids": ids_BP.astype(np.int32),
        "masked_lm_weights": np.ones((B, P), np.float32),
        "next_sentence_labels": rng.integers(0, 2, (B, 1)).astype(np.int32),
        "labels": labels_BT.astype(np.int32),
    }


def adamw():
    return optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)


class JaxRunner:
    """One jitted AdamW step over `loss_fn(params, batch, rng)`, parameters donated."""

    def __init__(self, params, loss_fn, batch):
        tx = adamw()
        self.params, self.opt_state = params, tx.init(params)
        self.batch = {k: jnp.asarray(v) for k, v in batch.items()}

        def train_step(params, opt_state, batch, rng):
            loss, grads = jax.value_and_grad(loss_fn)(params, batch, rng)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        self.train_step = jax.jit(train_step, donate_argnums=(0, 1))

    def step(self, i):
        self.params, self.opt_state, loss = self.train_step(
            self.params, self.opt_state, self.batch, jax.random.key(i)
        )
        return float(loss)


class Ours(JaxRunner):
    name = "attention_jax"

    def __init__(self, config, batch):
        model = BertForPreTraining(config)
        features = ("input_ids", "segment_ids", "input_mask", "masked_lm_positions")

        def loss_fn(params, batch, rng):
            logits = model.apply(
                {"params": params},
                *(batch[k] for k in features),
                deterministic=False,
                rngs={"dropout": rng},
            )
            return pretraining_loss(*logits, batch)[0]

        params = jax.jit(model.init)(jax.random.key(0), *(batch[k] for k in features))["params"]
        super().__init__(nn.meta.unbox(params), loss_fn, batch)


class HuggingFaceFlax(JaxRunner):
    name = "HF FlaxBertForPreTraining"

    def __init__(self, config, batch):
        import transformers

        model = transformers.FlaxBertForPreTraining(
            transformers.BertConfig(**config_to_hf(config)), seed=0, dtype=jnp.float32
        )

        def loss_fn(params, batch, rng):
            out = model(
                batch["input_ids"],
                attention_mask=batch["input_mask"],
                token_type_ids=batch["segment_ids"],
                params=params,
                dropout_rng=rng,
                train=True,
            )
            labels_BT = batch["labels"]
            weights_BT = (labels_BT >= 0).astype(jnp.float32)
            mlm_nll_BT = optax.softmax_cross_entropy_with_integer_labels(
                out.prediction_logits, jnp.maximum(labels_BT, 0)
            )
            nsp_nll_B = optax.softmax_cross_entropy_with_integer_labels(
                out.seq_relationship_logits, batch["next_sentence_labels"][:, 0]
            )
            return (mlm_nll_BT * weights_BT).sum() / weights_BT.sum() + nsp_nll_B.mean()

        super().__init__(model.params, loss_fn, batch)


class HuggingFacePyTorch:
    name = "HF PyTorch BertForPreTraining"

    def __init__(self, config, batch):
        import torch
        import transformers

        torch.manual_seed(0)
        self.model = transformers.BertForPreTraining(
            transformers.BertConfig(**config_to_hf(config))
        ).train()
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY
        )
        self.inputs = {
            "input_ids": torch.from_numpy(batch["input_ids"]).long(),
            "token_type_ids": torch.from_numpy(batch["segment_ids"]).long(),
            "attention_mask": torch.from_numpy(batch["input_mask"]).long(),
            "labels": torch.from_numpy(batch["labels"]).long(),
            "next_sentence_label": torch.from_numpy(batch["next_sentence_labels"][:, 0]).long(),
        }

    def step(self, i):
        loss = self.model(**self.inputs).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()


def matmul_flops_per_second():
    """Achieved FLOP/s of one jitted MATMUL_N³ float32 matmul (after a warm-up call)."""
    a = jax.random.normal(jax.random.key(0), (MATMUL_N, MATMUL_N), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    matmul(a, a).block_until_ready()

    def measure():
        start = time.perf_counter()
        matmul(a, a).block_until_ready()
        return 2 * MATMUL_N**3 / (time.perf_counter() - start)

    return measure


def timed(fn, *args):
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def serve(cls, shape, connection):
    """Worker process: build `cls` for `shape`, compile, then time one step per request."""
    config, B, _ = SHAPES[shape]
    try:
        start = time.perf_counter()
        runner = cls(config, make_batch(B))
        runner.step(0)  # compiles
        connection.send(("ready", time.perf_counter() - start))
    except Exception as error:  # noqa: BLE001 - a peer that fails is reported, not fatal
        traceback.print_exc()
        connection.send(("failed", f"{type(error).__name__}: {str(error).splitlines()[0]}"))
        return
    while (step := connection.recv()) is not None:
        connection.send(timed(runner.step, step))


def run_shape(name, implementations, steps):
    """Time `steps` interleaved steps of each implementation, each in its own process.

    Separate processes keep the libraries from sharing an allocator and thread pools: run in
    one process after PyTorch, our XLA step measured ~15% slower than on its own.
    """
    config, B, default_steps = SHAPES[name]
    steps = steps or default_steps
    context = multiprocessing.get_context("spawn")
    workers, errors = {}, {}
    for cls in implementations:
        connection, child = context.Pipe()
        process = context.Process(target=serve, args=(cls, name, child))
        process.start()
        try:
            status, value = connection.recv()
        except EOFError:
            status, value = "failed", f"worker exited with status {process.exitcode}"
        if status == "ready":
            print(f"  {cls.name}: built and compiled in {value:.0f} s")
            workers[cls.name] = (process, connection)
        else:
            errors[cls.name] = value
            process.join()
    peak = matmul_flops_per_second()
    seconds = {name: [] for name in workers}
    peaks = []
    for i in range(1, steps + 1):
        for worker_name, (_, connection) in workers.items():
            connection.send(i)
            seconds[worker_name].append(connection.recv())
        peaks.append(peak())
    for process, connection in workers.values():
        connection.send(None)
        process.join()
    peak_flops = statistics.median(peaks)
    rows = []
    for worker_name, timings in seconds.items():
        wall, cpu = (statistics.median(column) for column in zip(*timings, strict=True))
        per_second = B / wall
        # The Hugging Face models run the MLM head at all T positions.
        executed = flops_per_example(config, T, P if worker_name == Ours.name else T)
        rows.append(
            (
                worker_name,
                per_second,
                cpu,
                flops_per_example(config, T, P) * per_second / peak_flops,
                executed * per_second / peak_flops,
            )
        )
    return config, B, steps, peak_flops, rows, errors


def markdown(results, load_before, load_after):
    lines = [
        "# BERT pre-training step: sequences/s",
        "",
        f"`make bench-bert` on {platform.processor() or platform.machine()}, {os.cpu_count()} CPU "
        f"cores, jax {jax.__version__}; T = {T}, P = {P} masked positions, V = {VOCAB}, float32, "
        "dropout on, AdamW. Medians of interleaved steps. Load average (1 min) "
        f"{load_before:.1f} before, {load_after:.1f} after the run.",
        "",
        "| shape | B | implementation | seq/s | ours ÷ it | CPU s/step | MFU | executed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for config, B, steps, peak_flops, rows, errors in results:
        shape = f"L{config.num_layers}/H{config.hidden_size}/A{config.num_heads}"
        ours = {row[0]: row[1] for row in rows}.get(Ours.name)
        for name, rate, cpu, mfu, executed in rows:
            ratio = f"{ours / rate:.2f}×" if ours else "—"
            lines.append(
                f"| {shape} | {B} | {name} | {rate:.2f} | {ratio} | {cpu:.1f} | {mfu:.0%} "
                f"| {executed:.0%} |"
            )
        for name, error in errors.items():
            lines.append(f"| {shape} | {B} | {name} | failed: `{error}` | | | | |")
        lines.append(
            f"| {shape} | | matmul peak ({MATMUL_N}³ float32, jitted), {steps} steps | "
            f"{peak_flops / 1e9:.0f} GFLOP/s | | | | |"
        )
    lines += [
        "",
        "- seq/s and CPU s/step (process CPU time, both cores) are medians over the timed steps.",
        "- MFU: `flops_per_example` (exact matmul count, forward + backward, MLM head at the P "
        "masked positions) × seq/s ÷ the matmul peak measured in the same run.",
        "- executed: the same with the matmuls each implementation runs (the Hugging Face models "
        "compute the MLM head at all T positions), i.e. how well it uses the matmul units.",
    ]
    for config, *_ in results:
        ours, theirs = flops_per_example(config, T, P), flops_per_example(config, T, T)
        lines.append(
            f"- L{config.num_layers}/H{config.hidden_size}: a step needs {ours / 1e9:.1f} GFLOP "
            f"of matmuls per sequence here and {theirs / 1e9:.1f} in the Hugging Face models, so "
            f"at equal matmul efficiency ours is {theirs / ours:.2f}× faster."
        )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--steps", nargs="+", type=int, help="timed steps per shape")
    parser.add_argument("--only-ours", action="store_true", help="skip the Hugging Face peers")
    args = parser.parse_args()
    implementations = [Ours] if args.only_ours else [Ours, HuggingFaceFlax, HuggingFacePyTorch]
    steps = args.steps or [None] * len(args.shapes)
    load_before = os.getloadavg()[0]
    results = []
    for name, shape_steps in zip(args.shapes, steps, strict=True):
        print(f"{name}:")
        results.append(run_shape(name, implementations, shape_steps))
    table = markdown(results, load_before, os.getloadavg()[0])
    print(table)
    if not args.only_ours and args.shapes == list(SHAPES) and args.steps is None:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(table)
        print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
