"""BERT pre-training step throughput: ours against Hugging Face Flax and PyTorch, in one run.

Every implementation runs the same step on the same batch: MLM + NSP loss (dropout on, as in
pre-training), gradients, AdamW (lr 1e-4, weight decay 0.01) — ours with `BertForPreTraining`
and optax, Hugging Face's `FlaxBertForPreTraining` with its own jitted step and optax, and
`transformers.BertForPreTraining` with `torch.optim.AdamW`. Sequences of 128 tokens with 20
masked positions (google-research/bert's max_predictions_per_seq for 128) and the 30,522-token
uncased WordPiece vocabulary.

Fairness (`harness`): each implementation and a jitted 4096³ float32 matmul in its own process,
built and compiled one after another, then rounds in rotating order in which each runs a block of
timed steps while the others are idle; figures are medians with the min–max over every timed
step. MFU is `flops_per_example` (the matmul FLOPs the model needs, MLM head at the masked
positions only) × sequences/s ÷ the matmul's median FLOP/s in the same rounds. The Hugging Face
models compute the MLM head at every position, work that this count does not credit them with.

    .venv/bin/python benchmarks/bert.py [--shapes mini base] [--steps 4 2]

B batch, T sequence length, P masked predictions, V vocabulary.
"""

import argparse
import os
import pathlib
import platform

import flax.linen as nn
import harness
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
SHAPES = {  # name: (config, batch size, timed steps per block)
    "mini": (BertConfig.mini(VOCAB), 16, 4),
    "base": (BertConfig.base(VOCAB), 8, 2),
}
MATMUL_N = 4096
ROUNDS = 4  # the three implementations and the matmul each take every place in the order once


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
        self.threads = harness.xla_threads()

    def run(self, i):
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
        self.threads = harness.torch_threads(torch)

    def run(self, i):
        loss = self.model(**self.inputs).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()


def shape_rows(config, B, steps, results, errors):
    """Markdown rows of one shape's run, and the note on its FLOP bound."""
    shape = f"L{config.num_layers}/H{config.hidden_size}/A{config.num_heads}"
    peak, peak_cells = harness.matmul_peak(results, MATMUL_N)
    rates, cells = harness.shared_cells(results, B, Ours, rate_format=".2f")
    needed, theirs = flops_per_example(config, T, P), flops_per_example(config, T, T)
    # executed: the matmuls each one runs; the Hugging Face models run the MLM head at all T.
    executed = {cls: (needed if cls is Ours else theirs) * rates[cls] / peak for cls in results}
    lines = [
        f"| {shape} | {B} {cells[cls]} {needed * rates[cls] / peak:.0%} | {executed[cls]:.0%} |"
        for cls in results
    ]
    lines += [
        f"| {shape} | {B} | {name} | failed: `{error}` | | | | | |"
        for name, error in errors.items()
    ]
    lines.append(f"| {shape} | {peak_cells} | | | |")
    note = (
        f"- {shape}, {steps} timed steps per block: a step needs {needed / 1e9:.1f} GFLOP of "
        f"matmuls per sequence here and {theirs / 1e9:.1f} in the Hugging Face models, so at "
        f"equal matmul efficiency ours is {theirs / needed:.2f}× faster"
    )
    if {Ours, HuggingFaceFlax} <= results.keys():
        note += (
            f"; measured {rates[Ours] / rates[HuggingFaceFlax]:.2f}×, ours running its matmuls "
            f"at {executed[Ours]:.0%} of the peak and Flax at {executed[HuggingFaceFlax]:.0%}"
        )
    return lines, note + "."


def markdown(shapes, rounds, load_before):
    """The results file; `shapes` holds (config, B, steps per block, `run_phase` result)."""
    rows, notes = zip(
        *(shape_rows(c, B, steps, *phase) for c, B, steps, phase in shapes), strict=True
    )
    lines = [
        "# BERT pre-training step: sequences/s",
        "",
        f"`make bench-bert` on {platform.processor() or platform.machine()}, {os.cpu_count()} CPU "
        f"cores, jax {jax.__version__}; T = {T}, P = {P} masked positions, V = {VOCAB}, float32, "
        "dropout on, AdamW.",
        "",
        *harness.conditions(rounds, load_before, *(phase for *_, phase in shapes)),
        "",
        "| shape | B | implementation | s/step: median (min–max) | seq/s | ours ÷ it | CPU s/step "
        "| MFU | executed |",
        "|---|---|---|---|---|---|---|---|---|",
        *(line for shape_lines in rows for line in shape_lines),
        "",
        "- seq/s and CPU s/step (process CPU time, both cores) are medians over the timed steps.",
        "- MFU: `flops_per_example` (exact matmul count, forward + backward, MLM head at the P "
        "masked positions) × seq/s ÷ the matmul's median FLOP/s in the same rounds.",
        "- executed: the same with the matmuls each implementation runs (the Hugging Face models "
        "compute the MLM head at all T positions), i.e. how well it uses the matmul units.",
        "- attention dropout: Hugging Face Flax draws one T × T mask per layer, shared by the "
        "batch and the heads (`broadcast_dropout=True`); ours and PyTorch draw one per attention "
        "weight, B · N times the random bits.",
        *notes,
    ]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--steps", nargs="+", type=int, help="timed steps per block, per shape")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="rounds of timed blocks")
    parser.add_argument("--only-ours", action="store_true", help="skip the Hugging Face peers")
    args = parser.parse_args()
    implementations = [Ours] if args.only_ours else [Ours, HuggingFaceFlax, HuggingFacePyTorch]
    steps = args.steps or [SHAPES[name][2] for name in args.shapes]
    load_before = os.getloadavg()[0]
    shapes = []
    for name, shape_steps in zip(args.shapes, steps, strict=True):
        print(f"{name}:", flush=True)
        config, B, _ = SHAPES[name]
        peak = harness.MatmulPeak
        phase = harness.run_phase(
            {cls: (config, make_batch(B)) for cls in implementations} | {peak: (MATMUL_N,)},
            args.rounds,
            calls={cls: shape_steps for cls in implementations} | {peak: 3},
        )
        shapes.append((config, B, shape_steps, phase))
    table = markdown(shapes, args.rounds, load_before)
    print(table)
    default = args.shapes == list(SHAPES) and args.steps is None and args.rounds == ROUNDS
    if default and not args.only_ours:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(table)
        print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
